"""Peak memory of Moran's I and SpaGCN spatial domains on a large synthetic section.

A Visium-like hexagonal section of ``--spots`` spots (coordinates in
``obsm['spatial']`` and ``obs['array_row', 'array_col']``) with four band
domains; ``--genes`` genes of Poisson counts: 10 % are markers of one band
(mean 2 inside, 0.2 outside), the rest have no pattern. Each task runs in
its own process, which builds the data and then runs

* ``morans_i``: `sigel.tl.morans_i` on all genes (6 nearest spots),
* ``spatial_domains``: `sigel.tl.spatial_domains` on the first
  ``--domain-genes`` genes (the markers first), 4 domains,

and reports its peak resident set size (``ru_maxrss``: the whole process,
data included), the RSS after building the data, and the wall time.
Prints one JSON record per task and a markdown table.

    .venv/bin/python benchmarks/bench_tissue_memory.py --spots 50000 --genes 2000 --domain-genes 200
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def section(n_spots: int, n_genes: int, seed: int = 0):
    """A hexagonal Visium-like section with four band domains and Poisson counts (sparse)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rows = int(math.ceil(math.sqrt(n_spots)))
    cols = int(math.ceil(n_spots / rows))
    i, j = np.divmod(np.arange(rows * cols), cols)
    i, j = i[:n_spots], j[:n_spots]
    array_row, array_col = i, 2 * j + (i % 2)
    xy = np.column_stack([array_col * 50.0, array_row * 50.0 * math.sqrt(3)])
    v = (xy[:, 1] + 0.3 * xy[:, 0]) / (xy[:, 1] + 0.3 * xy[:, 0]).max()
    domain = np.minimum((v * 4).astype(np.int64), 3)
    rng = np.random.default_rng(seed)
    n_mark = max(4, n_genes // 10)
    data, indices, nnz = [], [], [np.zeros(1, dtype=np.int64)]
    for s in range(0, n_genes, 100):  # gene blocks, stored column by column (CSC) without a dense matrix
        g = np.arange(s, min(s + 100, n_genes))
        mu = np.exp(rng.normal(-1.0, 1.0, size=len(g)))[None, :] * np.ones((n_spots, 1))
        mark = g < n_mark
        if mark.any():
            inside = domain[:, None] == (g[mark] % 4)[None, :]
            mu[:, mark] = np.where(inside, 2.0, 0.2)
        B = sp.csc_matrix(rng.poisson(mu).astype(np.float32))
        data.append(B.data)
        indices.append(B.indices)
        nnz.append(np.diff(B.indptr))
        del mu, B
    indptr = np.cumsum(np.concatenate(nnz))
    X = sp.csc_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_spots, n_genes))
    del data, indices
    X = X.tocsr()
    obs = pd.DataFrame({"array_row": array_row, "array_col": array_col,
                        "domain": pd.Categorical(domain.astype(str))},
                       index=[f"spot{k}" for k in range(n_spots)])
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"gene{k:05d}" for k in range(n_genes)]))
    a.obsm["spatial"] = xy
    return a


def run_task(args) -> dict:
    if args.python_dir:  # e.g. another checkout's python/ for a before/after comparison
        sys.path.insert(0, str(Path(args.python_dir).resolve()))
    import sigel

    t0 = time.perf_counter()
    a = section(args.spots, args.genes, args.seed)
    rec = dict(task=args.task, code=str(Path(sigel.__file__).parent.parent), spots=a.n_obs, genes=a.n_vars, nnz=int(a.X.nnz), data_rss_mb=round(_rss_mb()),
               data_peak_mb=round(_peak_mb()), data_s=round(time.perf_counter() - t0, 1))
    t = time.perf_counter()
    if args.task == "morans_i":
        tab = sigel.tl.morans_i(a)
        n_mark = max(4, args.genes // 10)
        rec["genes_scored"] = int(len(tab))
        rec["marker_median_I"] = round(float(tab.loc[a.var_names[:n_mark], "I"].median()), 3)
        rec["other_median_I"] = round(float(tab.loc[a.var_names[n_mark:], "I"].median()), 4)
    else:
        genes = a.var_names[: args.domain_genes]
        dom = sigel.tl.spatial_domains(a, genes, n_domains=4, seed=0, n_threads=args.threads)
        s = sigel.tl.domain_scores(dom, a.obs["domain"])
        rec["genes_used"] = int(len(genes))
        rec["ari_refined"] = round(float(s.loc["domain_refined", "ari"]), 3)
        rec["n_found"] = int(dom.attrs["n_found"])
    rec["task_s"] = round(time.perf_counter() - t, 1)
    rec["peak_rss_mb"] = round(_peak_mb())
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spots", type=int, default=50000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--domain-genes", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=["morans_i", "spatial_domains", "both"], default="both")
    ap.add_argument("--python-dir", default=None, help="import sigel from this directory instead")
    args = ap.parse_args()
    if args.task != "both":
        print(json.dumps(run_task(args)), flush=True)
        return
    recs = []
    for task in ("morans_i", "spatial_domains"):
        cmd = [sys.executable, __file__, "--task", task, "--spots", str(args.spots), "--genes", str(args.genes),
               "--domain-genes", str(args.domain_genes), "--threads", str(args.threads), "--seed", str(args.seed)]
        if args.python_dir:
            cmd += ["--python-dir", args.python_dir]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rec = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rec), flush=True)
        recs.append(rec)
    print("\n| task | spots | genes | peak RSS (process) | RSS after data | task wall |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in recs:
        g = r.get("genes_scored", r.get("genes_used"))
        print(f"| {r['task']} | {r['spots']:,} | {g:,} | {r['peak_rss_mb']:,} MB | {r['data_rss_mb']:,} MB "
              f"| {r['task_s']} s |")


if __name__ == "__main__":
    main()
