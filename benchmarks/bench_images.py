"""Time GeneImages.from_anndata on DLPFC 151673 (issue 2: target < 2 s on 2 cores).

    .venv/bin/python benchmarks/bench_images.py --data ../shared/data
"""
import argparse
import json
import os
import platform
import resource
import time

import anndata as ad

import sigel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    adata = ad.read_h5ad(os.path.join(a.data, "dlpfc", "dlpfc_151673_counts.h5ad"))
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        im = sigel.GeneImages.from_anndata(adata, library_size_key="sum_umi")
        times.append(time.perf_counter() - t)
    out = dict(
        data="DLPFC 151673", spots=adata.n_obs, genes_in=adata.n_vars, genes_imaged=im.n_genes,
        image=f"{im.height}x{im.width}", nnz=int(im.values.nnz),
        seconds_min=round(min(times), 3), seconds_median=round(sorted(times)[len(times) // 2], 3),
        genes_per_s=round(im.n_genes / min(times)), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
