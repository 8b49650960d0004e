"""Command line: ``sigel train`` / ``sigel demo`` (the README's main job)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _render_images(adata, out: Path, n: int = 24) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from . import pl
    from .data import GeneImages

    im = GeneImages.from_anndata(adata)
    # the most variable processed images first: a quick look at spatial structure
    v = im.values
    mean = v.mean(axis=1).A1
    var = v.multiply(v).mean(axis=1).A1 - mean**2
    top = im.genes[(-var).argsort()[:n]]
    fig = pl.gene_images(im, top)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gene_images.png"
    fig.savefig(path, dpi=100)
    return path


def main(argv=None) -> int:
    """Entry point of the ``sigel`` console script."""
    parser = argparse.ArgumentParser(prog="sigel", description="SIGEL gene embeddings for spatial transcriptomics")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run on the bundled mouse olfactory bulb data")
    d.add_argument("--out", default="demo_out", help="output folder")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        from . import datasets

        adata = datasets.mouse_olfactory_bulb()
        path = _render_images(adata, Path(args.out))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
