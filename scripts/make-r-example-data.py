"""Write the R package's example data: the 2,000 most variable MOB genes.

The full mouse olfactory bulb data set (12,947 genes) lives in the Python
package (``python/sigel/datasets/extdata/mob``); the R package ships a subset
so that its installed size stays small. Genes are ranked by the variance of
their library-size-normalised counts (scaled to the median library size, no
log) over the 262 spots, and the 2,000 highest are kept in their original
order. On this scale the most expressed genes are among the most variable
(all 500 with the largest totals are kept), so examples and tests that take
the top genes by total count see the same genes as with the full data. ``spots.tsv.gz`` is copied unchanged: its ``total_counts``
column keeps the library size of all genes.

Usage: python scripts/make-r-example-data.py [N_GENES]
"""
from __future__ import annotations

import gzip
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io as sio
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "python" / "sigel" / "datasets" / "extdata" / "mob"
DST = ROOT / "inst" / "extdata" / "mob"


def _gzip_bytes(data: bytes, path: Path) -> None:
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)


def main(n_genes: int = 2000) -> None:
    counts = sp.csr_matrix(sio.mmread(str(SRC / "counts.mtx.gz")))  # genes x spots
    genes = pd.read_csv(SRC / "genes.tsv.gz", sep="\t")
    spots = pd.read_csv(SRC / "spots.tsv.gz", sep="\t")
    lib = np.asarray(counts.sum(axis=0)).ravel()
    scale = np.median(lib) / lib
    y = counts.multiply(scale[None, :]).tocsr()
    mean = np.asarray(y.mean(axis=1)).ravel()
    var = np.asarray(y.multiply(y).mean(axis=1)).ravel() - mean ** 2
    keep = np.sort(np.argsort(-var, kind="stable")[:n_genes])
    sub = counts[keep].tocoo()
    buf = io.BytesIO()
    sio.mmwrite(buf, sub, field="integer",
                comment=(f"Stahl et al. 2016 Science 353:78, mouse olfactory bulb replicate 11; genes x spots; "
                         f"the {n_genes} most variable (normalised counts) of the genes detected in >= 10 spots"))
    DST.mkdir(parents=True, exist_ok=True)
    _gzip_bytes(buf.getvalue(), DST / "counts.mtx.gz")
    _gzip_bytes(genes.iloc[keep].to_csv(sep="\t", index=False).encode(), DST / "genes.tsv.gz")
    shutil.copyfile(SRC / "spots.tsv.gz", DST / "spots.tsv.gz")
    assert len(spots) == counts.shape[1]
    print(f"{len(keep)} of {counts.shape[0]} genes -> {DST}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
