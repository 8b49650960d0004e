"""How much of Moran's I's power on the olfactory bulb survives depth matching (issue 18 diagnostic).

Every gene's counts are binomially thinned to at most ``mult x T`` in total
(``T`` = the median total count of the genes, what ``SIGEL(rarefy='auto')``
reads), once per repeat, and Moran's I (``sigel.tl.morans_i``, library sizes of
the full data) ranks the thinned genes against the published SpatialDE calls.
It tells what an SVG score that reads one depth-matched draw per gene could at
best hope for, whatever the encoder does.

    .venv/bin/python benchmarks/bench_svg_depth.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--mults", type=float, nargs="+", default=[1, 4], help="depths, in multiples of T")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from sklearn.metrics import average_precision_score

    import bench_svg
    import sigel

    adata, truth = bench_svg.load_mob(Path(args.data))
    X = sp.csc_matrix(adata.X).astype(np.float64)
    adata.obs["lib"] = np.asarray(X.sum(1)).ravel()
    tot = np.asarray(X.sum(0)).ravel()
    T = int(np.median(tot[tot > 0]))
    y = truth.reindex(adata.var_names).fillna(False).to_numpy()
    print(f"MOB: {adata.n_obs} spots x {adata.n_vars} genes, T = {T}; {int(y.sum())} SpatialDE genes")
    rng = np.random.default_rng(args.seed)

    def auprc(Y):
        a = adata.copy()
        a.X = sp.csr_matrix(Y)
        mi = sigel.tl.morans_i(a, library_size_key="lib")
        return average_precision_score(y, mi["I"].reindex(adata.var_names).fillna(-1).to_numpy())

    print("| counts read | Moran's I AUPRC |\n|---|---|")
    for mult in args.mults:
        vals = []
        for _ in range(args.repeats):
            Y = X.copy()
            keep = np.minimum(1.0, mult * T / np.maximum(tot, 1))
            Y.data = rng.binomial(Y.data.astype(np.int64), np.repeat(keep, np.diff(Y.indptr))).astype(np.float64)
            vals.append(auprc(Y))
        print(f"| one draw at {mult:g} x T | {' / '.join(f'{v:.3f}' for v in vals)} |", flush=True)
    print(f"| all counts | {auprc(X):.3f} |")


if __name__ == "__main__":
    main()
