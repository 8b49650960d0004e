"""Gene vectors minus where a homogeneous gene of the same expression level lands (tried for issue 13; not kept).

`tl.svg(reference='level')` found that homogeneous controls of genes of one expression level land in
one place. Does subtracting that place (the mean of the controls of the 101 genes nearest in level)
from each gene's vector leave a space that carries more biology and less depth? Writes three tables
for `bench_embeddings.py --embedding`: the model's vectors as `embed_images` reads them
(``<out>_real.csv``), those minus the pooled control mean (``<out>_raw_levelcorr.csv``), and the same
on unit vectors (``<out>_unit_levelcorr.csv``).

    .venv/bin/python benchmarks/exp_level_residual.py --data ../shared/data --sample 151673 \\
        --model benchmarks/out/models/s11_dlpfc151673 --out benchmarks/out/s14/lc/dlpfc151673
    .venv/bin/python benchmarks/bench_embeddings.py --data ../shared/data --dataset dlpfc151673 --no-baselines \\
        --kmeans-seeds 3 --embedding real=benchmarks/out/s14/lc/dlpfc151673_real.csv \\
        --embedding raw_lc=benchmarks/out/s14/lc/dlpfc151673_raw_levelcorr.csv \\
        --embedding unit_lc=benchmarks/out/s14/lc/dlpfc151673_unit_levelcorr.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--sample", default="151673", help="DLPFC section")
    ap.add_argument("--model", required=True, help="a default SIGEL fit of that section")
    ap.add_argument("--out", required=True, help="path prefix of the three CSV tables")
    ap.add_argument("--n-controls", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import anndata
    import torch

    import sigel
    from sigel.tasks.svg import LEVEL_WINDOW, _level_centre, embed_with_controls

    torch.set_num_threads(args.threads)
    adata = anndata.read_h5ad(Path(args.data) / "dlpfc" / f"dlpfc_{args.sample}_counts.h5ad")
    model = sigel.SIGEL.load(args.model)
    # the model's own reads (rarefy_draws), as fit and transform give them
    genes, real, C, mean = embed_with_controls(model, adata, None, args.n_controls, draws=None,
                                               image_options={"library_size_key": "sum_umi"})
    level = np.log1p(mean)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    unit = lambda Z: Z / np.linalg.norm(Z, axis=-1, keepdims=True)  # noqa: E731
    for name, R, Cs in (("raw", real, C), ("unit", unit(real), unit(C))):
        centre = _level_centre(Cs, level, LEVEL_WINDOW)[0]
        pd.DataFrame(R - centre, index=genes).to_csv(f"{args.out}_{name}_levelcorr.csv")
    pd.DataFrame(real, index=genes).to_csv(f"{args.out}_real.csv")


if __name__ == "__main__":
    main()
