"""Moran's I (`sigel.tl.morans_i`) as an SVG ranking: AUPRC against the published SpatialDE calls on MOB.

Runs the package found first on ``sys.path``; ``--python-dir`` puts another
checkout's ``python/`` folder first (old vs new side by side).

    .venv/bin/python benchmarks/bench_morans_i.py --data ../shared/data [--python-dir OLD/python]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--python-dir", default=str(Path(__file__).resolve().parent.parent / "python"))
    args = ap.parse_args(argv)
    sys.path.insert(0, args.python_dir)
    import anndata as ad
    import pandas as pd
    from sklearn.metrics import average_precision_score

    import sigel

    path = Path(args.data) / "svg"
    a = ad.read_h5ad(path / "mob_rep11_stahl2016.h5ad")
    a = a[a.obs["in_MOB_sample_info"].astype(bool)].copy()
    ref = pd.read_csv(path / "SPARK-Analysis_Rep11_MOB_spe.csv.gz", index_col=0).drop_duplicates("g").set_index("g")
    genes = a.var_names.intersection(ref.index)
    mi = sigel.tl.morans_i(a[:, genes].copy())
    y = (ref.loc[genes, "qval"] < 0.05).to_numpy()
    s = mi.reindex(genes)["I"].fillna(-1).to_numpy()
    print(f"{args.python_dir}: {len(genes)} genes, {int(y.sum())} SpatialDE SVGs, "
          f"Moran's I AUPRC {average_precision_score(y, s):.4f}")


if __name__ == "__main__":
    main()
