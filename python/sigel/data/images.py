"""Gene images: every gene's spatial expression map as a sparse image.

The one data type of the backend (`GeneImages`). Built in one vectorised pass:
normalise the sparse count matrix, scatter spots onto pixels with a sparse
(pixels x spots) averaging matrix, scale each gene robustly. Images stay
sparse (genes x pixels); dense tensors are made per batch.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import tissue
from .._settings import logger
from .._validate import (
    SigelInputError,
    assert_finite_nonnegative,
    assert_in_range,
    assert_one_of,
    assert_positive,
    assert_unique_names,
)

GEOMETRIES = ("auto", "visium", "grid", "free")
DEFAULT_EXCLUDE = ("MT-", "ERCC-")


@dataclass
class GeneImages:
    """Sparse gene images on a common pixel grid.

    Attributes
    ----------
    values
        ``scipy.sparse.csr_matrix`` (genes x pixels, float32); pixel ``p`` is
        row ``p // width``, column ``p % width`` of the padded image.
    height, width
        Padded image size (multiples of ``settings['patch_size']``).
    mask
        Boolean ``(height, width)`` tissue mask: pixels holding >= 1 spot.
    spot_pixel
        Flat pixel index of every spot/cell (``obs`` order).
    genes
        Gene names (``pd.Index``), the row labels of ``values``.
    spot_names
        Spot/cell names (``pd.Index``).
    settings
        The options used to build the images (geometry, normalisation, ...).
    counts
        Only for images built with ``rarefy``: the imaged genes' raw counts
        (``scipy.sparse.csr_matrix``, genes x spots, float32), from which
        depth-matched draws are taken (:class:`sigel.data.views.RarefiedImages`).
    spot_factor
        Only with ``counts``: each spot's normalisation factor (target sum /
        library size; 1 without normalisation).
    """

    values: sp.csr_matrix
    height: int
    width: int
    mask: np.ndarray
    spot_pixel: np.ndarray
    genes: pd.Index
    spot_names: pd.Index
    settings: dict = field(default_factory=dict)
    counts: sp.csr_matrix | None = None
    spot_factor: np.ndarray | None = None

    # ------------------------------------------------------------------ build
    @classmethod
    def from_anndata(
        cls,
        adata,
        *,
        layer: str | None = None,
        genes=None,
        geometry: str = "auto",
        spatial_key: str = "spatial",
        library_size_key: str | None = None,
        resolution: int = 64,
        patch_size: int = 4,
        normalize: bool = True,
        target_sum: float | None = None,
        log1p: bool = True,
        scale: str | None = "quantile",
        scale_quantile: float = 0.99,
        min_spots: int = 3,
        exclude_prefixes=DEFAULT_EXCLUDE,
        counts: bool = True,
        rarefy: int | str | None = None,
    ) -> "GeneImages":
        """Build gene images from an AnnData (spots/cells x genes).

        Parameters
        ----------
        adata
            AnnData with counts in ``X`` (or ``layers[layer]``) and coordinates
            in ``obs['array_row'/'array_col']`` (Visium), ``obsm[spatial_key]``
            or ``obs['x'/'y']``. Never modified.
        layer
            Layer holding the counts (default ``X``).
        genes
            Optional subset of genes (names) to image; unknown names raise.
        geometry
            ``'auto'`` (detect), ``'visium'`` (hexagonal array: row =
            ``array_row``, column = ``array_col // 2``), ``'grid'`` (integer
            x/y, e.g. legacy ST) or ``'free'`` (rasterise arbitrary
            coordinates; pixel = mean of its cells).
        spatial_key
            Key of ``obsm`` with coordinates. The ``'grid'``/``'free'``
            geometries read coordinates by the rule of
            :func:`sigel.tissue.coordinates`: ``obsm[spatial_key]``, else
            ``obs['x','y']``. Duplicated lattice positions and free
            coordinates that crowd many cells into shared pixels give a
            warning with the numbers (see :func:`spot_pixels`).
        library_size_key
            ``obs`` column with each spot's library size (e.g. ``'sum_umi'``
            when ``X`` holds a gene subset). Default: the row sums of ``X``.
        resolution
            Longest image side in pixels for ``'free'`` geometry.
        patch_size
            Height and width are padded up to a multiple of this (tissue is
            never cropped).
        normalize, target_sum
            Library-size normalisation to ``target_sum`` (default: median
            library size).
        log1p
            Apply ``log1p`` after normalisation.
        scale
            ``'quantile'``: divide each gene by its ``scale_quantile`` in-tissue
            pixel quantile (its maximum when that quantile is 0) and clip at 1,
            so images describe pattern, not intensity; ``None``: no scaling.
        min_spots
            Keep genes detected (> 0) in at least this many spots.
        exclude_prefixes
            Gene-name prefixes removed (case-insensitive), e.g. mitochondrial
            ``'MT-'`` and spike-ins ``'ERCC-'``; ``()`` keeps all.
        counts
            ``True`` (default): the matrix must hold raw counts (whole
            numbers) whenever ``normalize`` or ``log1p`` is on; non-integer
            values (e.g. log-normalised ``X``) raise a `SigelInputError`
            naming ``layer=``. ``False``: use the values as they are.
        rarefy
            Depth matching: keep the imaged genes' counts with the images so
            that a model can read them as *rarefied* draws, each gene's counts
            binomially thinned to at most ``rarefy`` in total (genes with
            fewer are kept whole). ``'auto'``: the median total count of the
            imaged genes. The resolved number is recorded in ``settings``.
            The images themselves (``values``) are not thinned. ``None``
            (default): no counts are kept.

        Returns
        -------
        GeneImages
        """
        _check_build_options(geometry, resolution, patch_size, min_spots, scale_quantile, scale)
        X, gene_names, raw_counts = _checked_matrix(adata, layer, counts, normalize, log1p)
        n_obs, n_var = X.shape

        rows, cols, geom = spot_pixels(adata, geometry=geometry, spatial_key=spatial_key, resolution=resolution)
        fingerprint = _content_hash(X, adata, spatial_key, library_size_key)
        lib = _library_sizes(adata, layer, library_size_key, X, normalize)  # over all genes, before filtering
        keep = _gene_filter(X, gene_names, genes, exclude_prefixes, min_spots)
        Xn, ts = _normalise(X[:, np.flatnonzero(keep)], lib, normalize, target_sum, log1p)
        values, H, W, mask, flat = _scatter_to_pixels(Xn, rows, cols, patch_size)
        if scale == "quantile":
            values = _robust_scale(values, int(mask.sum()), scale_quantile)

        kept = np.flatnonzero(keep)
        asked = rarefy
        counts_kept, spot_factor, rarefy = _rarefy_counts(X, kept, lib, ts, normalize, rarefy, raw_counts)
        settings = dict(
            geometry=geom, layer=layer, spatial_key=spatial_key, library_size_key=library_size_key,
            resolution=int(resolution), patch_size=int(patch_size), normalize=bool(normalize),
            target_sum=ts, log1p=bool(log1p), scale=scale, scale_quantile=float(scale_quantile),
            min_spots=int(min_spots), exclude_prefixes=list(exclude_prefixes or ()), counts=raw_counts,
            content_hash=fingerprint, n_genes_input=int(n_var), n_spots=int(n_obs),
            n_spots_sharing_pixel=int(n_obs - mask.sum()),
        )
        if rarefy is not None:
            settings["rarefy"] = rarefy
        elif asked is not None:  # 'auto' turned itself off (and warned): say so in the settings
            settings["rarefy_off"] = NOT_COUNTS
        return cls(
            values=values.astype(np.float32, copy=False), height=H, width=W, mask=mask, spot_pixel=flat,
            genes=gene_names[keep], spot_names=pd.Index(adata.obs_names.astype(str)), settings=settings,
            counts=counts_kept, spot_factor=spot_factor,
        )

    # ---------------------------------------------------------------- access
    @property
    def n_genes(self) -> int:
        return self.values.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Image (height, width)."""
        return (self.height, self.width)

    def __repr__(self) -> str:
        return (
            f"GeneImages: {self.n_genes} genes x {self.height}x{self.width} pixels "
            f"({int(self.mask.sum())} in tissue, geometry={self.settings.get('geometry')}, "
            f"nnz={self.values.nnz})"
        )

    def gene_index(self, genes) -> np.ndarray:
        """Row indices of ``genes`` (names); unknown names raise naming them."""
        genes = pd.Index([str(g) for g in np.atleast_1d(genes)])
        idx = self.genes.get_indexer(genes)
        if np.any(idx < 0):
            raise SigelInputError(f"genes not in these images: {genes[idx < 0][:10].tolist()}")
        return idx

    def dense(self, idx) -> np.ndarray:
        """Dense ``(B, H, W)`` float32 array of the genes at row indices ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        return self.values[idx].toarray().reshape(len(idx), self.height, self.width)

    def to_tensor(self, idx, device=None, dtype=None):
        """Dense batch ``(B, 2, H, W)`` torch tensor: value channel + tissue-mask channel."""
        import torch

        dtype = dtype or torch.float32
        v = torch.from_numpy(self.dense(idx)).to(device=device, dtype=dtype)
        m = torch.from_numpy(self.mask).to(device=device, dtype=dtype).expand_as(v)
        return torch.stack([v, m], dim=1)

    def image(self, gene) -> np.ndarray:
        """One gene's image (H x W) with NaN outside the tissue, for plotting."""
        img = self.dense(self.gene_index(gene))[0].astype(np.float64)
        img[~self.mask] = np.nan
        return img

    def spot_values(self, genes=None) -> sp.csr_matrix:
        """Processed values read back at every spot (genes x spots, sparse)."""
        vals = self.values if genes is None else self.values[self.gene_index(genes)]
        return sp.csr_matrix(vals[:, self.spot_pixel])

    def subset(self, genes) -> "GeneImages":
        """A new `GeneImages` holding only ``genes`` (in the given order)."""
        idx = self.gene_index(genes)
        return GeneImages(
            values=self.values[idx], height=self.height, width=self.width, mask=self.mask,
            spot_pixel=self.spot_pixel, genes=self.genes[idx], spot_names=self.spot_names,
            settings=dict(self.settings), counts=None if self.counts is None else self.counts[idx],
            spot_factor=self.spot_factor,
        )

    @staticmethod
    def image_options(settings: dict) -> dict:
        """The `from_anndata` keyword arguments that rebuild images with ``settings``."""
        keys = ("geometry", "layer", "spatial_key", "library_size_key", "resolution", "patch_size",
                "normalize", "log1p", "scale", "scale_quantile", "min_spots", "exclude_prefixes", "counts",
                "rarefy")
        return {k: settings[k] for k in keys if k in settings}


# ---------------------------------------------------------- build steps
def _check_build_options(geometry, resolution, patch_size, min_spots, scale_quantile, scale) -> None:
    """Check the scalar options of :meth:`GeneImages.from_anndata`."""
    assert_one_of("geometry", geometry, GEOMETRIES)
    assert_positive("resolution", resolution)
    assert_positive("patch_size", patch_size)
    assert_positive("min_spots", min_spots, allow_zero=True)
    assert_in_range("scale_quantile", scale_quantile, 0.0, 1.0)
    assert_one_of("scale", scale, ("quantile", None))


def _checked_matrix(adata, layer, counts, normalize, log1p):
    """The (spots x genes) CSR matrix, its gene names and whether it must hold raw counts, checked."""
    X = _counts_matrix(adata, layer)
    n_obs, n_var = X.shape
    if n_obs < 2:
        raise SigelInputError(f"need at least 2 spots to build images; got {n_obs}")
    if n_var < 1:
        raise SigelInputError("the count matrix has no genes")
    gene_names = pd.Index(adata.var_names.astype(str))
    assert_unique_names(gene_names, "gene names (adata.var_names)")
    assert_finite_nonnegative(X.data, "expression values")
    if not isinstance(counts, (bool, np.bool_)):
        raise SigelInputError(f"`counts` must be True or False; got {counts!r}")
    raw_counts = bool(counts)
    if raw_counts and (normalize or log1p):
        _check_counts(X, adata, layer)
    return X, gene_names, raw_counts


def _library_sizes(adata, layer, library_size_key, X, normalize) -> np.ndarray:
    """Each spot's library size (over all genes); with ``normalize``, refuses all-zero ones."""
    lib = tissue.library_size(adata, layer, library_size_key=library_size_key, X=X)
    where = ("the count matrix (row sums)" if library_size_key is None
             else f"library_size_key: adata.obs[{library_size_key!r}]")
    if normalize:
        if not np.any(lib > 0):
            raise SigelInputError(f"every spot has a library size of 0 in {where}; nothing to normalise")
        n_empty = int(np.sum(lib <= 0))
        if n_empty:
            logger.info("%d of %d spots have a library size of 0 in %s; their values read 0",
                           n_empty, X.shape[0], where)
    return lib


def _gene_filter(X, gene_names, genes, exclude_prefixes, min_spots) -> np.ndarray:
    """Boolean mask of the genes kept: requested, not excluded by prefix, detected in ``min_spots`` spots."""
    n_var = X.shape[1]
    keep = np.ones(n_var, dtype=bool)
    if genes is not None:
        wanted = pd.Index([str(g) for g in np.atleast_1d(genes)])
        missing = wanted.difference(gene_names)
        if len(missing):
            raise SigelInputError(f"{len(missing)} requested genes not in adata.var_names: {missing[:10].tolist()}")
        keep = gene_names.isin(wanted)
    if exclude_prefixes:
        low = gene_names.str.lower()
        for pre in exclude_prefixes:
            keep &= ~low.str.startswith(str(pre).lower())
    if min_spots > 0:
        n_expr = np.bincount(X.indices[X.data != 0], minlength=n_var)
        keep &= n_expr >= min_spots
    if not keep.any():
        raise SigelInputError(
            f"no genes left after filtering (min_spots={min_spots}, exclude_prefixes={tuple(exclude_prefixes or ())}); "
            "lower min_spots or check the input"
        )
    return keep


def check_rarefy(value) -> None:
    """``rarefy`` must be ``None``, ``'auto'`` or a positive whole number (raises `SigelInputError`)."""
    ok = value is None or (isinstance(value, str) and value == "auto") or (
        isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= 1)
    if not ok:
        raise SigelInputError(f"`rarefy` must be None, 'auto' or a positive whole number; got {value!r}")


#: Why ``rarefy='auto'`` turns itself off on values that are not counts (the warning and ``settings['rarefy_off']``).
NOT_COUNTS = "the values are not raw counts"


def rarefy_off(reason: str, stacklevel: int = 4) -> None:
    """Warn that ``rarefy='auto'`` reads the images whole here (depth matching is off), and why."""
    warnings.warn(f"rarefy='auto': {reason}; the encoder reads the full images (as with rarefy=None). "
                  "Pass rarefy=None to silence this.", UserWarning, stacklevel=stacklevel)


def _rarefy_counts(X, kept, lib, target_sum, normalize, rarefy, raw_counts=True):
    """``(counts, spot_factor, rarefy)`` kept for depth-matched draws (``rarefy`` resolved; all ``None`` when off).

    Counts are the genes' values as whole numbers (simulated values that are
    not, e.g. depth-scaled permutations read at a model's resolved depth, are
    rounded). ``'auto'`` asks for depth matching where the data allow it: on
    values that are not raw counts (``counts=False``, or non-integer values)
    it warns and turns it off.
    """
    if rarefy is None:
        return None, None, None
    check_rarefy(rarefy)
    C = sp.csr_matrix(X[:, kept].T, dtype=np.float32)
    if rarefy == "auto" and (not raw_counts or not np.array_equal(C.data, np.rint(C.data))):
        rarefy_off(f"{NOT_COUNTS}, so there are no counts to draw from")
        return None, None, None
    np.rint(C.data, out=C.data)
    C.eliminate_zeros()
    if rarefy == "auto":
        totals = np.asarray(C.sum(1)).ravel()
        rarefy = max(int(np.median(totals)), 1) if len(totals) else 1
    return C, spot_factors(lib, normalize, target_sum), int(rarefy)


def spot_factors(lib: np.ndarray, normalize: bool, target_sum: float | None) -> np.ndarray:
    """Each spot's normalisation factor (float32): ``target_sum / library size`` (0 for an empty spot;
    ``target_sum`` ``None`` counts as 1), or 1 everywhere without normalisation."""
    lib = np.asarray(lib)
    if not normalize:
        return np.ones(lib.shape, dtype=np.float32)
    return np.divide(target_sum or 1.0, lib, out=np.zeros_like(lib), where=lib > 0).astype(np.float32)


def _normalise(X, lib, normalize, target_sum, log1p):
    """Library-size normalisation and ``log1p`` (sparse-preserving); returns the matrix and the target sum used."""
    # X is a fresh column subset (never the caller's matrix): one float32 copy at most, changed in place
    Xn = sp.csr_matrix(X, dtype=np.float32)
    if normalize:
        ts = float(np.median(lib[lib > 0])) if target_sum is None and np.any(lib > 0) else (target_sum or 1.0)
        factor = spot_factors(lib, True, ts)
        Xn.data *= np.repeat(factor, np.diff(Xn.indptr))  # row scaling in place (= diag(factor) @ Xn)
        Xn.eliminate_zeros()
    else:
        ts = None
    if log1p:
        np.log1p(Xn.data, out=Xn.data)
    return Xn, ts


def _scatter_to_pixels(Xn, rows, cols, patch_size: int):
    """Scatter spots onto pixels (mean per pixel), padded to patch multiples.

    Returns the (genes x pixels) CSR values, the padded height and width, the
    tissue mask and every spot's flat pixel index.
    """
    n_obs = Xn.shape[0]
    h = int(rows.max()) + 1
    w = int(cols.max()) + 1
    H = -(-h // patch_size) * patch_size
    W = -(-w // patch_size) * patch_size
    flat = rows.astype(np.int64) * W + cols.astype(np.int64)
    counts = np.bincount(flat, minlength=H * W)
    A = sp.csr_matrix(
        (1.0 / counts[flat], (flat, np.arange(n_obs))), shape=(H * W, n_obs), dtype=np.float32
    )
    values = sp.csr_matrix((A @ Xn).T)
    values.eliminate_zeros()
    values.sort_indices()
    mask = (counts > 0).reshape(H, W)
    return values, H, W, mask, flat


# ---------------------------------------------------------------------- helpers
def _counts_matrix(adata, layer):
    """The count matrix as a float/int CSR matrix (`sigel.tissue.read_matrix`)."""
    return tissue.read_matrix(adata, layer)


_check_counts = tissue.check_integers
_obs_numeric = tissue._obs_numeric


def _hash_array(h, arr) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))


def _content_hash(X: sp.csr_matrix, adata, spatial_key, library_size_key) -> str:
    """Fingerprint of what gene images are built from: counts, spot and gene names, coordinates, library sizes."""
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    h.update(repr(X.shape).encode())
    for a in (X.indptr, X.indices, X.data):
        _hash_array(h, a)
    for names in (adata.obs_names, adata.var_names):
        h.update("\x00".join(map(str, names)).encode())
        h.update(b"\x01")
    for c in ("array_row", "array_col", "x", "y"):
        if c in adata.obs:
            h.update(c.encode())
            _hash_array(h, pd.to_numeric(adata.obs[c], errors="coerce").to_numpy(np.float64))
    if spatial_key is not None and spatial_key in adata.obsm:
        h.update(f"obsm:{spatial_key}".encode())
        _hash_array(h, np.asarray(adata.obsm[spatial_key], dtype=np.float64))
    if library_size_key is not None:
        h.update(f"lib:{library_size_key}".encode())
        if library_size_key in adata.obs:
            _hash_array(h, pd.to_numeric(adata.obs[library_size_key], errors="coerce").to_numpy(np.float64))
    return h.hexdigest()


def content_hash(adata, *, layer=None, spatial_key="spatial", library_size_key=None) -> str:
    """Fingerprint of the data `GeneImages.from_anndata` would read from ``adata`` with these options.

    Covers the count matrix (``X`` or ``layers[layer]``), spot and gene names,
    every coordinate source (``obs`` array_row/array_col/x/y and
    ``obsm[spatial_key]``) and the library-size column. Two AnnData objects
    with the same fingerprint give the same gene images; models record the
    fingerprint of their training data (``images_.settings['content_hash']``)
    so that results are reused only for the same content, never because the
    spot names match.

    Returns
    -------
    str
        A hex digest.
    """
    return _content_hash(_counts_matrix(adata, layer), adata, spatial_key, library_size_key)


def read_counts(adata, layer=None, *, counts: bool = True) -> sp.csr_matrix:
    """The checked expression matrix of ``adata`` (``X`` or ``layers[layer]``) as CSR.

    Refuses (with a `SigelInputError`) a missing layer, non-numeric values,
    NaN/inf, negative entries and, when ``counts``, non-integer values.
    float16 and bool matrices are widened to float32 and backed (on-disk)
    matrices read into memory. The result may share memory with ``adata``:
    do not modify it in place.
    """
    return tissue.counts(adata, layer, integers=counts)


#: above this fraction of spots sharing a pixel, free rasterisation warns
FREE_SHARED_WARN = 0.25
#: up to this fraction of duplicated integer positions, integer coordinates stay a grid
GRID_DUPLICATE_MAX = 0.01


def _n_duplicated(r: np.ndarray) -> int:
    """Spots whose integer (x, y) position another spot already holds."""
    return int(len(r) - len(np.unique(r, axis=0)))


def detect_geometry(adata, spatial_key: str = "spatial") -> str:
    """Guess the platform geometry: ``'visium'``, ``'grid'`` or ``'free'``.

    ``obs['array_row', 'array_col']`` with one row/column parity is Visium's
    hexagonal array (mixed parity: a grid). Otherwise the coordinates of
    :func:`sigel.tissue.coordinates` are a ``'grid'`` when they are integers
    spanning at most 512 positions. Integer coordinates of which a few spots
    (at most 1 %) share a position stay a grid, with a warning giving the
    numbers (the sharing spots are averaged into one pixel); with more
    duplicates they are not a lattice and are rasterised as ``'free'``
    coordinates, again with a warning. Pass ``geometry=`` to choose.
    """
    obs = adata.obs
    if "array_row" in obs and "array_col" in obs:
        rc = _obs_numeric(adata, ["array_row", "array_col"])
        par = (rc[:, 0] + rc[:, 1]) % 2
        return "visium" if np.all(par == par[0]) else "grid"
    xy = _grid_xy(adata, spatial_key)
    if xy is not None:
        r = np.round(xy)
        if np.allclose(xy, r, atol=0.25) and np.ptp(r, axis=0).max() <= 512:
            n_dup = _n_duplicated(r)
            if n_dup == 0:
                return "grid"
            n = len(r)
            if n_dup <= GRID_DUPLICATE_MAX * n:
                return "grid"  # spot_pixels warns about the shared positions
            warnings.warn(
                f"integer coordinates, but {n_dup} of {n} spots repeat another spot's position: not a "
                "lattice, rasterising them as free coordinates (pass geometry='grid' to force the grid)",
                stacklevel=3)
    return "free"


def _grid_xy(adata, spatial_key):
    """Coordinates for the grid/free geometries by the lookup rule, or None when there are none."""
    key = tissue.DEFAULT_SPATIAL_KEY if spatial_key is None else spatial_key
    if key in adata.obsm or ("x" in adata.obs and "y" in adata.obs) or key != tissue.DEFAULT_SPATIAL_KEY:
        return tissue.coordinates(adata, key)
    return None


def spot_pixels(adata, *, geometry="auto", spatial_key="spatial", resolution=64):
    """Integer (row, column) pixel of every spot and the geometry used.

    Spots that land in one pixel are averaged there. On a lattice
    (``'visium'``, ``'grid'``) that only happens to duplicated positions and
    gives a warning with their number; with ``'free'`` coordinates it warns
    when more than a quarter of the spots share a pixel, naming the
    resolution that would keep nearest neighbours apart.
    """
    obs = adata.obs
    if geometry == "auto":
        has_any = ("array_row" in obs and "array_col" in obs) or ("x" in obs and "y" in obs) \
            or spatial_key in adata.obsm
        if not has_any:
            raise SigelInputError(
                "no spatial coordinates found: looked for obs['array_row','array_col'] (Visium), "
                f"obs['x','y'] (grid) and obsm[{spatial_key!r}]"
            )
        geometry = detect_geometry(adata, spatial_key)
    if geometry == "visium":
        for c in ("array_row", "array_col"):
            if c not in obs:
                raise SigelInputError(f"geometry='visium' needs adata.obs[{c!r}]; not found")
        rc = np.round(_obs_numeric(adata, ["array_row", "array_col"])).astype(np.int64)
        logger.info("spot pixels from adata.obs[['array_row', 'array_col']] (Visium hexagonal array)")
        rows = rc[:, 0] - rc[:, 0].min()
        cols = rc[:, 1] // 2
        cols = cols - cols.min()
    else:
        xy = _grid_xy(adata, spatial_key)
        if xy is None:
            raise SigelInputError(
                f"geometry={geometry!r} needs coordinates in obsm[{spatial_key!r}] or obs['x','y']; none found"
            )
        xy = xy - xy.min(axis=0)
        if geometry == "grid":
            r = np.round(xy).astype(np.int64)
            if not np.allclose(xy, r, atol=0.5):
                warnings.warn("geometry='grid' with non-integer coordinates: rounding to the nearest pixel")
            cols, rows = r[:, 0], r[:, 1]
        else:  # free coordinates: rasterise, longest side ~ resolution pixels
            span = float(np.ptp(xy, axis=0).max())
            step = span / max(resolution - 1, 1) if span > 0 else 1.0
            r = np.floor(xy / step + 0.5).astype(np.int64)
            cols, rows = r[:, 0], r[:, 1]
            _warn_shared_free(xy, rows, cols, resolution, span)
            return rows, cols, geometry
    n_dup = _n_duplicated(np.column_stack([rows, cols]))
    if n_dup:
        warnings.warn(
            f"{n_dup} of {len(rows)} spots repeat the {geometry} position of another spot; they are averaged "
            "into shared pixels (remove the duplicates, or pass geometry='free' to rasterise the coordinates)",
            stacklevel=3)
    return rows, cols, geometry


def _warn_shared_free(xy, rows, cols, resolution, span):
    n = len(rows)
    flat = rows * (int(cols.max()) + 1) + cols
    _, inv, cnt = np.unique(flat, return_inverse=True, return_counts=True)
    shared = int((cnt[inv] > 1).sum())
    if n < 2 or shared <= FREE_SHARED_WARN * n:
        return
    _, dist = tissue.knn_indices(xy, 1)
    d = float(np.median(dist[:, 0]))
    need = f"; resolution >= {int(np.ceil(span / d)) + 1} keeps most nearest neighbours apart" if d > 0 else ""
    warnings.warn(
        f"free coordinates at resolution={resolution}: {shared:,} of {n:,} spots/cells share a pixel with "
        f"another ({len(cnt):,} pixels hold them) and are averaged there{need}", stacklevel=3)


def _robust_scale(values: sp.csr_matrix, n_tissue: int, q: float) -> sp.csr_matrix:
    """Divide each row by its q-quantile over ``n_tissue`` in-tissue pixels (zeros included); clip at 1.

    Returns a new matrix sharing ``values``' index arrays (float32 data).
    """
    n_g = values.shape[0]
    nnz = np.diff(values.indptr)
    row_of = np.repeat(np.arange(n_g), nnz)
    sorted_data = _sort_within_rows(values.data, row_of)
    rank = int(np.ceil(q * (n_tissue - 1)))
    n_zero = n_tissue - nnz
    pos = rank - n_zero  # position among the sorted non-zeros
    has = (pos >= 0) & (nnz > 0)
    scale = np.ones(n_g, dtype=np.float64)
    last = values.indptr[1:] - 1
    gmax = np.where(nnz > 0, sorted_data[np.clip(last, 0, None)] if sorted_data.size else 0.0, 1.0)
    scale[:] = np.where(nnz > 0, gmax, 1.0)
    if sorted_data.size:
        scale[has] = sorted_data[values.indptr[:-1][has] + pos[has]]
    scale[scale <= 0] = 1.0
    # float32 division of float32 values by float32-exact scales: the same numbers as in float64, rounded
    data = np.asarray(values.data, dtype=np.float32) / scale.astype(np.float32)[row_of]
    np.minimum(data, 1.0, out=data)
    return sp.csr_matrix((data, values.indices, values.indptr), shape=values.shape)


def _sort_within_rows(data: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """``data`` sorted within each row (``row_of`` non-decreasing), as float32.

    Non-negative float32 values order like their bit patterns, so one sort of
    ``row << 32 | bits`` (uint64) does it, ~10x faster than a lexsort.
    """
    d = np.asarray(data, dtype=np.float32)
    if d.size == 0 or not (d.min() >= 0) or np.signbit(d).any():
        return d[np.lexsort((d, row_of))]
    key = row_of.astype(np.uint64)
    key <<= np.uint64(32)
    key |= d.view(np.uint32)
    key.sort()
    return (key & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)
