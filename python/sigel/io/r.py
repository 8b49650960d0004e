"""File readers and writers behind the R package's ``readSigelH5AD()``,
``writeSigelH5AD()`` and ``readSpaceRanger()``.

R reaches these through reticulate and converts the AnnData part by part
(sparse matrices as CSC arrays, data frames column by column), so no
reticulate conversion of scipy sparse matrices is involved.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._validate import SigelInputError

__all__ = ["read_h5ad", "write_h5ad", "read_spaceranger", "csc_parts"]


def read_h5ad(path):
    """Read an ``.h5ad`` file into memory.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    anndata.AnnData
    """
    import anndata as ad

    p = Path(path).expanduser()
    if not p.is_file():
        raise SigelInputError(f"no .h5ad file at {str(p)!r}")
    try:
        return ad.read_h5ad(p)
    except Exception as e:  # h5py / anndata give their own exception types
        raise SigelInputError(f"could not read {str(p)!r} as an .h5ad file: {e}") from e


def write_h5ad(adata, path, *, overwrite: bool = False, compression: str | None = "gzip"):
    """Write ``adata`` to ``path`` (refuses to replace a file unless ``overwrite``).

    Parameters
    ----------
    adata
        The AnnData.
    path
        Destination ``.h5ad`` file.
    overwrite
        Replace an existing file.
    compression
        HDF5 compression of the arrays (``'gzip'`` or ``None``).

    Returns
    -------
    str
        The path written.
    """
    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise SigelInputError(f"{str(p)!r} already exists; pass overwrite=True to replace it")
    if p.exists() and p.is_dir():
        raise SigelInputError(f"{str(p)!r} is a directory, not a file")
    # strings stay strings (anndata would turn them into categoricals)
    adata.write_h5ad(p, compression=compression, convert_strings_to_categoricals=False)
    return str(p)


def csc_parts(m, transpose: bool = False) -> dict:
    """A matrix as CSC arrays (``indptr``, ``indices``, ``data``, ``shape``).

    Dense arrays come back with ``dense=True`` and the array in ``data``.

    Parameters
    ----------
    m
        A scipy sparse matrix or array-like.
    transpose
        Take the transpose first (AnnData's spots x genes -> genes x spots).

    Returns
    -------
    dict
    """
    import scipy.sparse as sp

    if sp.issparse(m):
        c = sp.csc_matrix(m.T if transpose else m)
        c.sum_duplicates()
        c.sort_indices()
        return {"dense": False, "indptr": c.indptr.astype(np.int32), "indices": c.indices.astype(np.int32),
                "data": c.data.astype(np.float64), "shape": [int(s) for s in c.shape]}
    a = np.asarray(m.T if transpose else m, dtype=np.float64)
    return {"dense": True, "data": np.ascontiguousarray(a), "shape": [int(s) for s in a.shape]}


def _positions(outs: Path) -> pd.DataFrame:
    sp_dir = outs / "spatial"
    new = sp_dir / "tissue_positions.csv"
    old = sp_dir / "tissue_positions_list.csv"
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    if new.is_file():
        pos = pd.read_csv(new)
        if list(pos.columns[:1]) != ["barcode"]:
            pos = pd.read_csv(new, header=None, names=cols)
    elif old.is_file():
        pos = pd.read_csv(old, header=None, names=cols)
    else:
        raise SigelInputError(f"no spatial/tissue_positions.csv or spatial/tissue_positions_list.csv in {str(outs)!r}")
    missing = [c for c in cols if c not in pos.columns]
    if missing:
        raise SigelInputError(f"{str(new if new.is_file() else old)!r} lacks columns {missing}")
    return pos.set_index("barcode")[cols[1:]]


def read_spaceranger(outs, *, matrix: str = "filtered"):
    """Read a Space Ranger ``outs/`` folder (Visium) into an AnnData.

    The counts come from ``<matrix>_feature_bc_matrix.h5``, or from the
    ``<matrix>_feature_bc_matrix/`` folder (``matrix.mtx.gz``,
    ``features.tsv.gz``, ``barcodes.tsv.gz``); the spot positions from
    ``spatial/tissue_positions.csv`` (Space Ranger >= 2.0, with a header) or
    ``spatial/tissue_positions_list.csv`` (no header). Only gene expression
    features are kept; gene symbols become ``var_names`` (made unique) with
    the Ensembl ids in ``var['gene_ids']``.

    Parameters
    ----------
    outs
        The ``outs`` folder (or a folder with the same layout).
    matrix
        ``'filtered'`` (spots under tissue) or ``'raw'``.

    Returns
    -------
    anndata.AnnData
        Spots x genes raw counts (CSR); ``obs`` columns ``in_tissue``,
        ``array_row``, ``array_col``, ``pxl_row_in_fullres``,
        ``pxl_col_in_fullres``; ``obsm['spatial']`` = (``pxl_col``, ``pxl_row``)
        full-resolution pixels, as scanpy/squidpy store them.
    """
    import scanpy as sc

    if matrix not in ("filtered", "raw"):
        raise SigelInputError(f"matrix must be 'filtered' or 'raw'; got {matrix!r}")
    outs = Path(outs).expanduser()
    if not outs.is_dir():
        raise SigelInputError(f"no Space Ranger outs folder at {str(outs)!r}")
    h5 = outs / f"{matrix}_feature_bc_matrix.h5"
    mtx = outs / f"{matrix}_feature_bc_matrix"
    if h5.is_file():
        adata = sc.read_10x_h5(h5)
    elif mtx.is_dir():
        adata = sc.read_10x_mtx(mtx, var_names="gene_symbols", make_unique=True, gex_only=True)
    else:
        raise SigelInputError(f"neither {h5.name} nor the folder {mtx.name}/ is in {str(outs)!r}")
    adata.var_names_make_unique()
    pos = _positions(outs)
    miss = adata.obs_names.difference(pos.index)
    if len(miss):
        raise SigelInputError(f"{len(miss)} barcodes of the matrix have no tissue position (e.g. {list(miss[:3])})")
    pos = pos.loc[adata.obs_names]
    for c in pos.columns:
        adata.obs[c] = pos[c].to_numpy()
    adata.obsm["spatial"] = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    return adata
