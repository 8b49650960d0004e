"""Command line: ``sigel train`` and ``sigel demo`` (the README's main job)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def write_outputs(model, out: Path, *, title: str) -> dict:
    """Write the tables, history, model and HTML report of a fitted model into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    from .report import write_report

    out.mkdir(parents=True, exist_ok=True)
    emb = model.embeddings_.copy()
    emb.index.name = "gene"
    emb.to_csv(out / "embeddings.tsv", sep="\t")
    ctx = model.contexts_[["context", "confidence"]].copy()
    ctx.index.name = "gene"
    ctx.to_csv(out / "contexts.tsv", sep="\t")
    mem = model.memberships_.copy()
    mem.index.name = "gene"
    mem.to_csv(out / "memberships.tsv", sep="\t")
    hist = model.history_.reset_index(drop=True)
    (out / "history.json").write_text(json.dumps(hist.to_dict(orient="records"), indent=1))
    model.save(out / "model", overwrite=True)
    write_report(model, out / "report.html", title=title)
    return {p: str(out / p) for p in ("embeddings.tsv", "contexts.tsv", "memberships.tsv", "history.json",
                                      "model", "report.html")}


def _fit(adata, args):
    from . import SIGEL

    hyper = {}
    if args.epochs is not None:
        hyper["epochs"] = args.epochs
    if args.n_contexts is not None:
        hyper["n_contexts"] = args.n_contexts
    model = SIGEL(**hyper)
    fit_kw = dict(device=args.device, seed=args.seed, progress=not args.quiet, n_threads=args.threads)
    if args.n_genes:
        from . import tl

        lib = getattr(args, "library_size_key", None)
        mi = tl.morans_i(adata, layer=getattr(args, "layer", None), library_size_key=lib)
        fit_kw["genes"] = list(mi.index[: args.n_genes])
    if getattr(args, "library_size_key", None):
        fit_kw["library_size_key"] = args.library_size_key
    if getattr(args, "layer", None):
        fit_kw["layer"] = args.layer
    return model.fit(adata, **fit_kw)


def _common(p):
    p.add_argument("--out", required=p.prog.endswith("train"), default="demo_out", help="output folder")
    p.add_argument("--epochs", type=int, default=None, help="epoch limit (default: the model's)")
    p.add_argument("--n-contexts", type=int, default=None, help="number of contexts K (default: from the gene count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo = not p.prog.endswith("train")
    p.add_argument("--n-genes", type=int, default=1500 if demo else None,
                   help="embed only the N genes with the highest Moran's I (default: all genes"
                        + ("; the demo uses 1500 to finish in minutes on a laptop CPU)" if demo else ")"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _without_nproc(argv: list) -> list:
    """``argv`` without its ``--nproc N`` (or ``--nproc=N``) option."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def main(argv=None) -> int:
    """Entry point of the ``sigel`` console script."""
    parser = argparse.ArgumentParser(prog="sigel", description="SIGEL gene embeddings for spatial transcriptomics")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit a model on an .h5ad file (spots x genes, raw counts)")
    t.add_argument("input", help="AnnData .h5ad file")
    t.add_argument("--layer", default=None, help="layer with counts (default X)")
    t.add_argument("--library-size-key", default=None, help="obs column with library sizes (e.g. sum_umi)")
    t.add_argument("--nproc", type=int, default=1,
                   help="processes for data-parallel training (relaunches itself with torchrun; "
                        "one per GPU on a GPU machine; default 1)")
    _common(t)
    d = sub.add_parser("demo", help="fit on the bundled mouse olfactory bulb and write a report")
    _common(d)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    from . import datasets
    from ._validate import SigelInputError
    from .train import distributed

    if args.cmd == "train":
        if args.nproc < 1:
            print(f"sigel: error: --nproc must be at least 1; got {args.nproc}", file=sys.stderr)
            return 2
        if args.nproc > 1 and not distributed.distributed_requested():
            # relaunch this same command in `nproc` processes; each fit detects the torchrun environment
            return int(distributed.launch(_without_nproc(argv), args.nproc))

    t0 = time.perf_counter()
    try:
        if args.cmd == "train":
            import anndata as ad

            src = Path(args.input)
            if not src.exists():
                raise SigelInputError(f"input file not found: {src}")
            adata = ad.read_h5ad(src)
            title = f"sigel: {src.name}"
        else:
            adata = datasets.mouse_olfactory_bulb()
            title = "sigel demo: mouse olfactory bulb (Ståhl et al. 2016)"
        model = _fit(adata, args)
        if not distributed.is_main_process():  # under torchrun: rank 0 writes the outputs
            return 0
        paths = write_outputs(model, Path(args.out), title=title)
    except SigelInputError as e:
        print(f"sigel: error: {e}", file=sys.stderr)
        return 2
    print(f"{model!r}\nfinished in {time.perf_counter() - t0:.0f} s; wrote:")
    for k, v in paths.items():
        print(f"  {v}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
