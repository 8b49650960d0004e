"""The one way in for spatial data: counts, library sizes, coordinates, the spot graph, Moran's I.

Every part of sigel that reads spatial input from an AnnData goes through
this module (in the spirit of squidpy's ``gr``), so that one rule decides
where coordinates come from, one function reads counts, one builds the
spot neighbour graph and one computes Moran's I:

- :func:`counts`: the count matrix (``X`` or a layer) as CSR, checked to be
  numeric, finite and non-negative.
- :func:`library_size`: each spot's library size (row sums, or an ``obs``
  column).
- :func:`log_normalize`: counts scaled to a common library size, then
  ``log1p``.
- :func:`coordinates`: the spot coordinates, by one lookup rule (below).
- :func:`spatial_neighbors`: a sparse k-nearest-neighbour graph of the spots
  (scikit-learn's ``NearestNeighbors``), stored in ``obsp`` like squidpy's
  ``spatial_neighbors`` when asked, and reused by every task that finds it.
- :func:`morans_i`: Moran's I of every gene on that graph.

Coordinate lookup rule
----------------------
1. ``obsm[spatial_key]`` when it exists. A ``spatial_key`` other than the
   default ``'spatial'`` is an explicit request: when it is missing, that is
   an error (no fallback).
2. Otherwise ``obs['x', 'y']``.
3. Otherwise the Visium array coordinates ``obs['array_row', 'array_col']``,
   placed on their hexagonal lattice: x = ``array_col``, y = ``array_row *
   sqrt(3)`` (neighbours in a row are 2 array columns apart).

The source used is logged at ``info`` level. The pixel geometry of gene
images (Visium / grid / free rasterisation, `sigel.data.images`) reads the
Visium array columns for its hexagonal grid first, because that is a layout
and not a coordinate system; every other coordinate it needs follows the
rule above.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._settings import logger
from ._stats import bh
from ._validate import (
    SigelInputError,
    as_coordinates,
    assert_finite_nonnegative,
    assert_positive,
    assert_unique_names,
)

__all__ = [
    "counts", "library_size", "log_normalize", "coordinates", "coordinate_source",
    "read_matrix", "check_integers",
    "spatial_neighbors", "neighbor_graph", "knn_indices", "knn_weights", "row_standardize", "morans_i",
    "morans_i_values", "gene_indices",
]

DEFAULT_SPATIAL_KEY = "spatial"
_SQRT3 = math.sqrt(3.0)


# ====================================================================== counts
def read_matrix(adata, layer: str | None = None) -> sp.csr_matrix:
    """The count matrix as a float/int CSR matrix (backed data read into memory, float16/bool widened)."""
    if layer is None:
        X, where = adata.X, "adata.X"
    else:
        if layer not in adata.layers:
            raise SigelInputError(f"layer {layer!r} not found in adata.layers; available: {list(adata.layers.keys())}")
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
    if X is None:
        raise SigelInputError("adata.X is empty; pass the layer holding counts with `layer=`")
    if not sp.issparse(X) and not isinstance(X, np.ndarray):
        try:  # backed AnnData: an on-disk sparse dataset or h5py dataset; read it into memory
            if hasattr(X, "to_memory"):
                X = X.to_memory()
            elif hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__"):
                X = X[()]
        except Exception as e:  # pragma: no cover - depends on the storage backend
            raise SigelInputError(f"{where} could not be read ({type(X).__name__}): {e}; load the AnnData "
                                  "into memory (e.g. adata.to_memory()) first") from None
    if sp.issparse(X):
        kind = X.dtype.kind
        if kind not in "biuf":
            raise SigelInputError(f"{where} must hold numbers; got dtype {X.dtype}")
        if kind == "b" or X.dtype == np.float16:
            X = X.astype(np.float32)
        X = sp.csr_matrix(X)
    else:
        try:
            arr = np.asarray(X)
        except Exception as e:
            raise SigelInputError(f"{where} could not be read as an array ({type(X).__name__}): {e}") from None
        if arr.ndim != 2:
            raise SigelInputError(f"{where} must be a 2-d (spots x genes) matrix; got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise SigelInputError(f"{where} must hold numbers; got dtype {arr.dtype}")
        if arr.dtype.kind == "b" or arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            n = int(arr.size - np.isfinite(arr).sum())
            raise SigelInputError(f"{where}: expression values contain {n} NaN or infinite entries")
        X = sp.csr_matrix(arr)
    return X



def check_integers(X: sp.csr_matrix, adata, layer) -> None:
    """Refuse non-integer values where raw counts are required, pointing at ``layer=`` and ``counts=False``."""
    data = X.data
    if data.dtype.kind not in "f" or data.size == 0:
        return
    n_bad, example, step = 0, None, 1 << 22
    for a in range(0, data.size, step):  # in chunks: no nnz-sized temporaries
        d = data[a:a + step]
        frac = d != np.floor(d)
        c = int(np.count_nonzero(frac))
        if c and example is None:
            example = float(d[np.flatnonzero(frac)[0]])
        n_bad += c
    if n_bad == 0:
        return
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    others = [k for k in adata.layers.keys() if k != layer]
    hint = (f"pass `layer=` naming the layer that holds the raw counts (layers: {others})" if others
            else "pass `layer=` naming a layer that holds the raw counts (this AnnData has no layers)")
    raise SigelInputError(
        f"{where} holds non-integer values ({n_bad:,} of {data.size:,} non-zero entries, e.g. {example:g}): "
        "it looks normalised or log-transformed, and would be normalised and log-transformed again. "
        f"SIGEL needs raw counts: {hint}, or pass counts=False to use these values as they are."
    )


def counts(adata, layer: str | None = None, *, dtype=None, integers: bool = False) -> sp.csr_matrix:
    """The count matrix of ``adata`` (spots x genes) as a CSR matrix.

    Parameters
    ----------
    adata
        AnnData with counts in ``X`` or ``layers[layer]``. Never modified
        (the result may share memory with it: do not modify it in place).
    layer
        Layer holding the counts (default ``X``).
    dtype
        Convert to this dtype (default: keep the numeric dtype of the input;
        float16 and bool are widened to float32, backed matrices read into
        memory).
    integers
        Also refuse non-integer values (normalised or log-transformed data
        where raw counts are required), naming ``layer=`` as the way out.

    Returns
    -------
    scipy.sparse.csr_matrix
        Checked to be numeric, finite and non-negative; a
        `sigel.SigelInputError` names the problem otherwise.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, shape=(6, 6), seed=0)
    >>> sigel.tissue.counts(ad).shape
    (32, 20)
    """
    X = read_matrix(adata, layer)
    if dtype is not None and X.dtype != np.dtype(dtype):
        X = X.astype(dtype)
    assert_finite_nonnegative(X.data, "expression values")
    if integers:
        check_integers(X, adata, layer)
    return X


_checked_counts = counts  # for functions whose `counts` argument shadows the name


def library_size(adata, layer: str | None = None, *, library_size_key: str | None = None, X=None) -> np.ndarray:
    """Each spot's library size (float64).

    Parameters
    ----------
    adata
        The AnnData.
    layer
        Counts layer whose row sums are the library sizes (default ``X``).
    library_size_key
        ``obs`` column holding the library sizes instead (e.g. ``'sum_umi'``
        when ``X`` holds a subset of the genes); must be finite and >= 0.
    X
        The counts already read by :func:`counts` (saves reading them again).

    Returns
    -------
    numpy.ndarray
        ``(n_spots,)`` library sizes.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, shape=(6, 6), seed=0)
    >>> bool((sigel.tissue.library_size(ad) > 0).all())
    True
    """
    if library_size_key is not None:
        if library_size_key not in adata.obs:
            raise SigelInputError(
                f"library_size_key {library_size_key!r} not found in adata.obs; "
                f"available: {list(adata.obs.columns)[:20]}"
            )
        lib = pd.to_numeric(adata.obs[library_size_key], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(lib)) or np.any(lib < 0):
            bad = int(np.sum(~np.isfinite(lib) | (lib < 0)))
            raise SigelInputError(f"library_size_key: adata.obs[{library_size_key!r}] must hold finite "
                                  f"numbers >= 0; {bad} of {len(lib)} spots do not")
        return lib
    X = counts(adata, layer) if X is None else X
    return np.asarray(X.sum(axis=1)).ravel().astype(np.float64)


def log_normalize(adata, genes=None, *, layer: str | None = None, library_size_key: str | None = None,
                  target_sum: float | None = None, format: str = "csr", counts: bool = True,
                  dtype=np.float32) -> sp.spmatrix:
    """Counts / library size * ``target_sum``, then ``log1p`` (spots x genes, sparse, float32 by default).

    The library size is taken over all genes of ``adata`` (or from
    ``obs[library_size_key]``) before ``genes`` are selected; ``target_sum``
    defaults to the median positive library size. Spots with library size 0
    stay 0.

    Parameters
    ----------
    adata
        The AnnData (counts in ``X`` or ``layers[layer]``).
    genes
        Optional gene names; the columns of the result follow their order.
    layer, library_size_key
        See :func:`counts` and :func:`library_size`.
    target_sum
        Common library size (default: the median).
    format
        ``'csr'`` (default) or ``'csc'`` (per-gene work; made with one copy
        of the counts).
    counts
        ``True`` (default): the matrix must hold raw counts (whole numbers);
        normalised or log-transformed values raise a `sigel.SigelInputError`
        naming ``layer=``. ``False``: use the values as they are.
    dtype
        Float type of the result: float32 (default; half the memory at
        scale) or float64 (exact comparisons, e.g. with R).

    Returns
    -------
    scipy.sparse.csr_matrix or scipy.sparse.csc_matrix

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, shape=(6, 6), seed=0)
    >>> sigel.tissue.log_normalize(ad, ["gene00000", "gene00001"]).shape
    (32, 2)
    """
    X = _checked_counts(adata, layer, integers=bool(counts))
    lib = library_size(adata, layer, library_size_key=library_size_key, X=X)
    pos = lib > 0
    if not np.any(pos):
        raise SigelInputError("every spot has zero counts (library size 0)")
    if genes is not None:
        X = X[:, gene_indices(adata, genes)]
    if target_sum is None:
        target_sum = float(np.median(lib[pos]))
    scale = np.where(pos, target_sum / np.where(pos, lib, 1.0), 0.0).astype(dtype)
    if format == "csc":  # one copy of the counts, scaled and logged in place
        X = X.tocsc().astype(dtype, copy=False)
        step = 1 << 22
        for a in range(0, X.nnz, step):  # row scaling without an nnz-sized temporary
            X.data[a:a + step] *= scale[X.indices[a:a + step]]
    elif format == "csr":
        X = X.astype(dtype, copy=True)
        X.data *= np.repeat(scale, np.diff(X.indptr))
    else:
        raise SigelInputError(f"`format` must be 'csr' or 'csc'; got {format!r}")
    np.log1p(X.data, out=X.data)
    X.eliminate_zeros()
    return X


def gene_indices(adata, genes) -> np.ndarray:
    """Column indices of ``genes`` (names) in ``adata.var_names``; unknown names raise naming them."""
    names = pd.Index(adata.var_names.astype(str))
    wanted = pd.Index([str(g) for g in np.atleast_1d(genes)])
    idx = names.get_indexer(wanted)
    if np.any(idx < 0):
        miss = wanted[idx < 0]
        raise SigelInputError(f"{len(miss)} genes not in adata.var_names, e.g. {list(miss[:5])}")
    return idx


# ================================================================== coordinates
def coordinate_source(adata, spatial_key: str | None = DEFAULT_SPATIAL_KEY) -> str:
    """Where :func:`coordinates` reads from: ``'obsm'``, ``'obs_xy'`` or ``'array'``.

    Raises `sigel.SigelInputError` when no coordinates exist (or an explicit,
    non-default ``spatial_key`` is missing from ``obsm``).
    """
    key = DEFAULT_SPATIAL_KEY if spatial_key is None else spatial_key
    if key in adata.obsm:
        return "obsm"
    if key != DEFAULT_SPATIAL_KEY:
        raise SigelInputError(
            f"spatial_key {key!r} not found in adata.obsm; available: {list(adata.obsm.keys())}"
        )
    if "x" in adata.obs and "y" in adata.obs:
        return "obs_xy"
    if "array_row" in adata.obs and "array_col" in adata.obs:
        return "array"
    raise SigelInputError(
        f"no spatial coordinates found: looked for adata.obsm[{key!r}], obs['x','y'] and "
        "obs['array_row','array_col'] (Visium)"
    )


def _obs_numeric(adata, cols) -> np.ndarray:
    out = []
    for c in cols:
        v = pd.to_numeric(adata.obs[c], errors="coerce").to_numpy(np.float64)
        if np.any(~np.isfinite(v)):
            raise SigelInputError(f"adata.obs[{c!r}] must hold finite numbers (found non-numeric, NaN or inf)")
        out.append(v)
    return np.column_stack(out)


def coordinates(adata, spatial_key: str | None = DEFAULT_SPATIAL_KEY, *, log: bool = True) -> np.ndarray:
    """Spot coordinates ``(n_spots, 2)`` (float64) by the one lookup rule.

    ``obsm[spatial_key]`` (a non-default ``spatial_key`` must exist), else
    ``obs['x','y']``, else the Visium array coordinates on their hexagonal
    lattice (x = ``array_col``, y = ``array_row * sqrt(3)``). The source is
    logged at ``info`` level. Coordinates must be finite numbers.

    Parameters
    ----------
    adata
        The AnnData. Never modified.
    spatial_key
        ``obsm`` key of the coordinates (default ``'spatial'``).
    log
        Log the source used.

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(10, shape=(5, 5), geometry="visium", seed=0)
    >>> del ad.obsm["spatial"]
    >>> sigel.tissue.coordinates(ad)[:2].round(3).tolist()
    [[2.0, 0.0], [4.0, 0.0]]
    """
    key = DEFAULT_SPATIAL_KEY if spatial_key is None else spatial_key
    src = coordinate_source(adata, key)
    if src == "obsm":
        xy = as_coordinates(adata.obsm[key], adata.n_obs, f"adata.obsm[{key!r}]")
        where = f"adata.obsm[{key!r}]"
    elif src == "obs_xy":
        xy = _obs_numeric(adata, ["x", "y"])
        where = "adata.obs[['x', 'y']]"
    else:
        rc = _obs_numeric(adata, ["array_row", "array_col"])
        xy = np.column_stack([rc[:, 1], rc[:, 0] * _SQRT3])
        where = "adata.obs[['array_row', 'array_col']] (hexagonal lattice)"
    if log:
        logger.info(f"spatial coordinates from {where}")
    return xy


# ================================================================ spot graph
def knn_indices(coords: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, distances)``, each ``(n, k)``: every spot's ``k`` nearest other spots.

    scikit-learn's ``NearestNeighbors``; a spot is never its own neighbour,
    also when coordinates are duplicated. ``k`` is capped at ``n - 1``.
    """
    from sklearn.neighbors import NearestNeighbors

    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    k = int(min(n_neighbors, n - 1))
    if k < 1:
        raise SigelInputError(f"a spot neighbour graph needs at least 2 spots; got {n}")
    nn = NearestNeighbors(n_neighbors=k).fit(coords)
    dist, idx = nn.kneighbors()  # X=None: each point's neighbours without itself
    return idx.astype(np.int64), dist


def _graph_from_knn(idx: np.ndarray, dist: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    conn = sp.csr_matrix((np.ones(n * k), (rows, idx.ravel())), shape=(n, n))
    # distances keep explicit zeros of duplicated coordinates: the pattern equals conn's
    d = sp.csr_matrix((dist.ravel() + 0.0, (rows, idx.ravel())), shape=(n, n))
    return conn, d


def spatial_neighbors(adata, n_neighbors: int = 6, *, spatial_key: str | None = DEFAULT_SPATIAL_KEY,
                      key_added: str | None = None):
    """Sparse k-nearest-neighbour graph of the spots.

    Each spot is linked to its ``n_neighbors`` nearest other spots (directed:
    row ``i`` holds spot ``i``'s neighbours), built with scikit-learn's
    ``NearestNeighbors`` on :func:`coordinates`. Memory is linear in the
    number of spots.

    Parameters
    ----------
    adata
        The AnnData (or an ``(n, 2)`` coordinate array).
    n_neighbors
        Neighbours per spot (6 suits Visium's hexagonal spots).
    spatial_key
        ``obsm`` key of the coordinates (lookup rule: :func:`coordinates`).
    key_added
        When given (and ``adata`` is an AnnData), store the graph like
        squidpy's ``spatial_neighbors``: ``obsp[key_added +
        '_connectivities']``, ``obsp[key_added + '_distances']`` and
        ``uns[key_added + '_neighbors']`` (keys and parameters). Tasks reuse
        a stored graph whose parameters match (:func:`neighbor_graph`).
        Default: nothing is written.

    Returns
    -------
    (connectivities, distances)
        Two ``(n, n)`` CSR matrices with the same pattern: 1 for a neighbour,
        and its Euclidean distance.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(10, shape=(6, 6), seed=0)
    >>> conn, dist = sigel.tissue.spatial_neighbors(ad, 4, key_added="spatial")
    >>> int(conn.sum(axis=1).max()), "spatial_connectivities" in ad.obsp
    (4, True)
    """
    assert_positive("n_neighbors", n_neighbors)
    is_ad = hasattr(adata, "obsm") and hasattr(adata, "obs")
    if is_ad:
        coords = coordinates(adata, spatial_key)
    else:
        arr = np.asarray(adata)
        coords = as_coordinates(arr, arr.shape[0] if arr.ndim == 2 else -1, "coordinates")
    conn, dist = _graph_from_knn(*knn_indices(coords, int(n_neighbors)))
    if key_added is not None and is_ad:
        ck, dk = f"{key_added}_connectivities", f"{key_added}_distances"
        adata.obsp[ck] = conn
        adata.obsp[dk] = dist
        adata.uns[f"{key_added}_neighbors"] = {
            "connectivities_key": ck, "distances_key": dk,
            "params": {"n_neighbors": int(n_neighbors), "coord_type": "generic",
                       "spatial_key": DEFAULT_SPATIAL_KEY if spatial_key is None else str(spatial_key),
                       "source": coordinate_source(adata, spatial_key)},
        }
        logger.info(f"added adata.obsp[{ck!r}], adata.obsp[{dk!r}]")
    return conn, dist


def neighbor_graph(adata, n_neighbors: int = 6, *, spatial_key: str | None = DEFAULT_SPATIAL_KEY,
                   key: str = "spatial") -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The spot kNN graph every task uses: the stored one when it matches, else a fresh one.

    A graph stored by ``spatial_neighbors(adata, key_added=key)`` is reused
    when it was built with the same ``n_neighbors``, the same coordinate
    source and has one row per spot; otherwise the graph is built (and not
    stored: the caller's AnnData is never modified). A stored graph carried
    through a subset of the spots (AnnData subsets ``obsp``) keeps only the
    links among the kept spots.

    Returns
    -------
    (connectivities, distances)
        As :func:`spatial_neighbors`.
    """
    info = adata.uns.get(f"{key}_neighbors") if hasattr(adata, "uns") else None
    if isinstance(info, dict):
        params = info.get("params", {})
        ck, dk = info.get("connectivities_key"), info.get("distances_key")
        try:
            src = coordinate_source(adata, spatial_key)
        except SigelInputError:
            src = None
        want_key = DEFAULT_SPATIAL_KEY if spatial_key is None else str(spatial_key)
        if (params.get("n_neighbors") == int(n_neighbors) and params.get("spatial_key") == want_key
                and params.get("source") == src and ck in adata.obsp and dk in adata.obsp
                and adata.obsp[ck].shape == (adata.n_obs, adata.n_obs)):
            logger.info(f"reusing the spot graph in adata.obsp[{ck!r}]")
            return sp.csr_matrix(adata.obsp[ck]), sp.csr_matrix(adata.obsp[dk])
    return spatial_neighbors(adata, n_neighbors, spatial_key=spatial_key)


def knn_weights(coords: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Row-standardised kNN spatial weights of an ``(n, 2)`` coordinate array (each neighbour ``1 / k``).

    The weights :func:`morans_i` uses: :func:`spatial_neighbors` followed by
    :func:`row_standardize`.
    """
    return row_standardize(spatial_neighbors(coords, n_neighbors)[0])


def row_standardize(W: sp.spmatrix) -> sp.csr_matrix:
    """Spatial weights with every row summing to 1 (rows without neighbours stay 0)."""
    W = sp.csr_matrix(W, dtype=np.float64)
    r = np.asarray(W.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(np.divide(1.0, r, out=np.zeros_like(r), where=r > 0)) @ W)


# ================================================================= Moran's I
def _power_sums(X: sp.csc_matrix):
    """Per-column sums of x, x^2, x^3, x^4 of a sparse matrix (zeros contribute nothing)."""
    data = X.data.astype(np.float64)
    col = np.repeat(np.arange(X.shape[1]), np.diff(X.indptr))
    G = X.shape[1]
    return [np.bincount(col, weights=data ** k, minlength=G) for k in (1, 2, 3, 4)]


def _block_stats(Xb: sp.csc_matrix, W: sp.csr_matrix, n: int):
    """Moran's I (scanpy) and the kurtosis ``b2`` of the columns of one gene block."""
    import scanpy as sc

    p1, p2, p3, p4 = _power_sums(Xb)
    m = p1 / n
    m2 = p2 - n * m * m                                      # sum (x - m)^2
    m4 = p4 - 4 * m * p3 + 6 * m * m * p2 - 3 * n * m ** 4    # sum (x - m)^4
    ok = m2 > 1e-12 * np.maximum(1.0, n * m * m)
    I = np.full(Xb.shape[1], np.nan)
    if ok.any():
        vals = Xb[:, np.flatnonzero(ok)].T.tocsr().astype(np.float64)  # genes x spots, as scanpy takes it
        I[ok] = sc.metrics.morans_i(W, vals)
    with np.errstate(invalid="ignore", divide="ignore"):
        b2 = np.where(ok, n * m4 / (m2 * m2), np.nan)
    return I, b2


def morans_i_values(X: sp.spmatrix, W: sp.spmatrix, *, block: int = 128) -> pd.DataFrame:
    """Moran's I, its z-score and one-sided p-value for every column of ``X`` (spots x genes).

    ``I = n / S0 * z'Wz / z'z`` with ``z`` the centred values, computed by
    ``scanpy.metrics.morans_i`` on the sparse weights ``W`` (spots x spots).
    The z-score uses the variance under the *randomisation* assumption
    (Cliff & Ord 1981; it includes each gene's kurtosis, which keeps sparse,
    skewed counts calibrated) and ``E[I] = -1 / (n - 1)``; the p-value is
    one-sided, for positive autocorrelation. Constant columns get NaN.
    Genes are processed in blocks of ``block`` columns.

    Returns
    -------
    pandas.DataFrame
        Columns ``I``, ``z``, ``pval`` in the column order of ``X``.
    """
    from scipy.stats import norm

    X = sp.csc_matrix(X)
    W = sp.csr_matrix(W, dtype=np.float64)
    n, G = X.shape
    if n < 4:
        raise SigelInputError(f"Moran's I needs at least 4 spots; got {n}")
    I = np.full(G, np.nan)
    b2 = np.full(G, np.nan)
    for a in range(0, G, int(block)):  # float64 copies only per block of genes
        I[a:a + block], b2[a:a + block] = _block_stats(X[:, a:a + block], W, n)
    r = np.asarray(W.sum(axis=1)).ravel()
    c = np.asarray(W.sum(axis=0)).ravel()
    S0 = float(W.sum())
    S1 = 0.5 * float(((W + W.T.tocsr()).power(2)).sum())
    S2 = float(np.sum((r + c) ** 2))
    E = -1.0 / (n - 1)
    n2 = n * n
    var = (n * ((n2 - 3 * n + 3) * S1 - n * S2 + 3 * S0 * S0)
           - b2 * ((n2 - n) * S1 - 2 * n * S2 + 6 * S0 * S0)) / ((n - 1) * (n - 2) * (n - 3) * S0 * S0) - E * E
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (I - E) / np.sqrt(np.where(var > 0, var, np.nan))
    return pd.DataFrame({"I": I, "z": z, "pval": norm.sf(z)})


def morans_i(adata, genes=None, *, layer: str | None = None, spatial_key: str | None = DEFAULT_SPATIAL_KEY,
             library_size_key: str | None = None, n_neighbors: int = 6, counts: bool = True,
             dtype=np.float32) -> pd.DataFrame:
    """Moran's I of every gene on the spot kNN graph (sparse; memory linear in spots).

    Values are library-size normalised and ``log1p``-transformed
    (:func:`log_normalize`). Spatial weights: the :func:`neighbor_graph`
    (``n_neighbors`` nearest spots, a stored ``obsp`` graph when it matches),
    row-standardised, so each spot's neighbours weigh ``1 / k``. The
    statistic comes from ``scanpy.metrics.morans_i``. P-values use the normal
    approximation with the variance under the **randomisation** assumption
    (Cliff & Ord 1981: it includes each gene's kurtosis), one-sided for
    positive autocorrelation; q-values are Benjamini-Hochberg.

    Parameters
    ----------
    adata
        AnnData with counts and coordinates (lookup rule: :func:`coordinates`).
        Never modified. Counts must be finite and non-negative; at least 4
        spots.
    genes
        Genes to score (default: all), in the order of the output.
    layer, library_size_key
        Counts layer and optional ``obs`` column of library sizes.
    spatial_key
        ``obsm`` key of the coordinates.
    n_neighbors
        Neighbours per spot (6 suits Visium's hexagons).
    counts
        Require raw (whole-number) counts (default); ``False`` uses the
        values as they are.
    dtype
        Float type of the normalised values (`log_normalize`): float32
        (default) or float64 (R's ``sigelMoransI`` uses it).

    Returns
    -------
    pandas.DataFrame
        Index ``gene`` (input order); columns ``I``, ``z``, ``pval``,
        ``qval``. Genes constant over the spots get NaN. Genes are not
        filtered: a gene detected in a single spot gets its Moran's I.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, shape=(8, 8), seed=0)
    >>> sigel.tissue.morans_i(ad).columns.tolist()
    ['I', 'z', 'pval', 'qval']
    """
    assert_positive("n_neighbors", n_neighbors)
    n = adata.n_obs
    if n < 4:
        raise SigelInputError(f"Moran's I needs at least 4 spots; got {n}")
    names = pd.Index(adata.var_names.astype(str)) if genes is None else \
        pd.Index([str(g) for g in np.atleast_1d(genes)])
    assert_unique_names(adata.var_names.astype(str), "gene names (adata.var_names)")
    X = log_normalize(adata, genes, layer=layer, library_size_key=library_size_key, format="csc", counts=counts,
                      dtype=dtype)
    conn, _ = neighbor_graph(adata, int(n_neighbors), spatial_key=spatial_key)
    out = morans_i_values(X, row_standardize(conn))
    out.index = pd.Index(names, name="gene")
    out["qval"] = bh(out["pval"].to_numpy())
    return out
