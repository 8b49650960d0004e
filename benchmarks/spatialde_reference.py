"""A SpatialDE reference ranking for sections without published calls (issue 18, power on prostate).

The olfactory bulb comes with published SpatialDE results; the prostate cancer
section does not. This script runs SpatialDE (Svensson et al. 2018; the
``SpatialDE`` package from PyPI, version 1.1.3) the way its README does --
Anscombe-stabilised counts (``NaiveDE.stabilize``), log library size regressed
out (``NaiveDE.regress_out``), ``SpatialDE.run`` -- and writes one row per gene
(``g``, ``LLR``, ``pval``, ``qval``), the columns `bench_svg.py --reference-calls`
reads.

SpatialDE is a benchmark-only dependency with old pins; run it in its own
virtual environment, never the package's:

    python3 -m venv /tmp/sde
    /tmp/sde/bin/pip install "numpy<2" "scipy<1.12" "pandas<2.2" anndata patsy NaiveDE SpatialDE==1.1.3
    /tmp/sde/bin/python benchmarks/spatialde_reference.py --data ../shared/data --section prostate_cancer \
        --out benchmarks/out/spatialde_prostate_cancer.csv
    # check against the published bulb calls first:
    /tmp/sde/bin/python benchmarks/spatialde_reference.py --data ../shared/data --section mob \
        --out benchmarks/out/spatialde_mob.csv

Genes with fewer than ``--min-total`` counts in the section are left out, as in
the SpatialDE tutorials.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def load_section(data: Path, section: str):
    """(counts DataFrame spots x genes, coordinates DataFrame with x, y, library sizes or None) of one section
    (read as the SVG benchmark reads it, `bench_svg.read_section`)."""
    from bench_svg import read_section

    a = read_section(data, section)
    if section == "mob":
        xy = np.c_[a.obs["x"].astype(float), a.obs["y"].astype(float)]
    else:
        xy = np.asarray(a.obsm["spatial"], dtype=float)[:, :2]
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    counts = pd.DataFrame(X, index=a.obs_names, columns=a.var_names)
    coords = pd.DataFrame(xy, index=a.obs_names, columns=["x", "y"])
    # library size over all genes where the file holds a gene subset (DLPFC: `sum_umi`)
    lib = a.obs["sum_umi"].to_numpy(float) if "sum_umi" in a.obs else None
    return counts, coords, lib


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--section", required=True, choices=["mob", "prostate_cancer", "dlpfc151673", "dlpfc151675"])
    ap.add_argument("--min-total", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    import NaiveDE
    import SpatialDE

    counts, coords, lib = load_section(Path(args.data), args.section)
    counts = counts.loc[:, counts.sum(0) >= args.min_total]
    info = coords.copy()
    info["total_counts"] = counts.sum(1) if lib is None else lib
    t = time.perf_counter()
    norm = NaiveDE.stabilize(counts.T).T
    resid = NaiveDE.regress_out(info, norm.T, "np.log(total_counts)").T
    res = SpatialDE.run(info[["x", "y"]].to_numpy(), resid)
    res = res.sort_values("LLR", ascending=False)[["g", "LLR", "pval", "qval", "l"]]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    res.to_csv(args.out, index=False)
    print(f"{args.section}: {counts.shape[0]} spots x {counts.shape[1]} genes, {int((res.qval < 0.05).sum())} at "
          f"q < 0.05, {time.perf_counter() - t:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
