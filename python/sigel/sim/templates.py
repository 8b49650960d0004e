"""Spatial pattern templates and their region weights.

The template builders (`layers`, `core`, `ring`, `crescent`, `interface`,
`checkerboard`, `from_mask`) return one value per spot; `region_weights`
turns a template into region weights (steps 1 and 4 of the recipe in the
`sigel.sim` docstring).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import tissue
from .._validate import SigelInputError, assert_one_of, assert_positive

BACKGROUND, PATTERN = "background", "pattern"


# ============================================================== templates -> weights
def _scaled(coords) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    lo = coords.min(axis=0)
    span = np.ptp(coords, axis=0)
    span[span == 0] = 1.0
    return (coords - lo) / span


def _sample_image(coords, image) -> np.ndarray:
    image = np.asarray(image)
    H, W = image.shape
    uv = _scaled(coords)
    col = np.rint(uv[:, 0] * (W - 1)).astype(np.int64)
    row = np.rint(uv[:, 1] * (H - 1)).astype(np.int64)
    return image[row, col]


def region_weights(coords, template, *, taper: float = 0.0):
    """Region weights of a template at the spots (step 1 and 4 of the recipe).

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    template
        One value per spot (labels, booleans, or a continuous pattern in
        [0, 1]) or a 2-D mask/label image read at the spots.
    taper
        Width of the tapered edges in spot spacings (0 = sharp edges).

    Returns
    -------
    weights : numpy.ndarray
        ``(n_spots, n_regions)``, rows sum to 1.
    regions : list of str
        Region names (columns of ``weights``).
    hard : numpy.ndarray
        Index of each spot's region before tapering (used for quantiles).

    Examples
    --------
    >>> import numpy as np, sigel
    >>> xy = np.c_[np.arange(10.0), np.zeros(10)]
    >>> W, regions, hard = sigel.sim.region_weights(xy, np.arange(10) < 5)
    >>> regions
    ['background', 'pattern']
    """
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    t = template
    if isinstance(t, pd.Series):
        t = t.to_numpy() if not isinstance(t.dtype, pd.CategoricalDtype) else pd.Categorical(t)
    if not isinstance(t, pd.Categorical):
        arr = np.asarray(t)
        if arr.ndim == 2 and not (arr.shape[1] == 1 and arr.shape[0] == n):
            t = _sample_image(coords, arr)
        elif arr.ndim == 2:
            t = arr[:, 0]
        elif arr.ndim != 1:
            raise SigelInputError(f"template must be one value per spot or a 2-D image; got shape {arr.shape}")
    if len(t) != n:
        raise SigelInputError(f"template has {len(t)} values but there are {n} spots")

    if isinstance(t, pd.Categorical):
        if pd.isna(np.asarray(t.astype(object))).any():
            raise SigelInputError("template labels contain missing values")
        regions = [str(c) for c in t.categories]
        hard = np.asarray(t.codes, dtype=np.int64)
        W = np.zeros((n, len(regions)))
        W[np.arange(n), hard] = 1.0
    else:
        arr = np.asarray(t)
        if arr.dtype.kind == "b" or (arr.dtype.kind in "iuf" and np.all(np.isin(arr, (0, 1)))):
            w = arr.astype(np.float64)
            kind = "binary"
        elif arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise SigelInputError("template contains NaN or infinite values")
        elif arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
            if arr.min() < 0 or arr.max() > 1:
                raise SigelInputError(
                    "a numeric (non-integer) template must be a pattern in [0, 1]; "
                    f"got range [{arr.min():g}, {arr.max():g}] (pass labels as strings or integers)"
                )
            w = arr.astype(np.float64)
            kind = "continuous"
        else:
            kind = "labels"
        if kind == "labels":
            if arr.dtype.kind in "iuf":  # integer-valued numbers: labels "0", "2", ... (as R's as.character)
                arr = arr.astype(np.int64)
            lab = pd.Series(arr, dtype=object)
            if lab.isna().any():
                raise SigelInputError("template labels contain missing values")
            lab = lab.astype(str)
            regions = sorted(lab.unique().tolist())
            hard = pd.Categorical(lab, categories=regions).codes.astype(np.int64)
            W = np.zeros((n, len(regions)))
            W[np.arange(n), hard] = 1.0
        else:
            regions = [BACKGROUND, PATTERN]
            W = np.column_stack([1.0 - w, w])
            hard = (w >= 0.5).astype(np.int64)
    if taper and taper > 0:
        W = _taper(coords, W, float(taper))
    return W, regions, hard


def _median_nn(coords) -> float:
    if len(coords) < 2:
        return 1.0
    _, d = tissue.knn_indices(coords, 1)
    d = d[:, 0]
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def _taper(coords, W, taper):
    from scipy.spatial import cKDTree

    s = taper * _median_nn(coords)
    tree = cKDTree(coords)
    D = tree.sparse_distance_matrix(tree, 3.0 * s * (1 + 1e-7), output_type="coo_matrix")
    K = sp.csr_matrix((np.exp(-(D.data ** 2) / (2 * s * s)), (D.row, D.col)), shape=(len(coords),) * 2)
    K.sum_duplicates()  # (the pairs found include each spot with itself and duplicated positions)
    return np.asarray(K @ W) / np.asarray(K.sum(axis=1))


# ============================================================== template builders
def _uv(coords):
    uv = _scaled(np.asarray(coords, dtype=np.float64)[:, :2])
    return uv[:, 0], uv[:, 1]


def layers(coords, n_layers: int = 4, *, axis: str = "v", angle: float | None = None) -> np.ndarray:
    """Layer bands: equal-width stripes across the tissue.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    n_layers
        Number of bands.
    axis
        ``"v"`` (bands stacked along y: horizontal layers) or ``"u"`` (along x).
    angle
        Optional direction of the layer normal in degrees (overrides ``axis``).

    Returns
    -------
    numpy.ndarray
        Labels ``"layer0"`` ... per spot.

    Examples
    --------
    >>> import numpy as np, sigel
    >>> xy = np.c_[np.zeros(4), np.arange(4.0)]
    >>> sigel.sim.layers(xy, 2).tolist()
    ['layer0', 'layer0', 'layer1', 'layer1']
    """
    assert_positive("n_layers", n_layers)
    u, v = _uv(coords)
    if angle is not None:
        t = np.deg2rad(angle)
        s = np.cos(t) * u + np.sin(t) * v
        s = (s - s.min()) / (np.ptp(s) or 1.0)
    else:
        assert_one_of("axis", axis, ("u", "v"))
        s = v if axis == "v" else u
    k = np.minimum((s * n_layers).astype(int), n_layers - 1)
    return np.array([f"layer{i}" for i in k], dtype=object)


def core(coords, *, center=(0.5, 0.5), radius: float = 0.25, edge: float = 0.0) -> np.ndarray:
    """A core region, optionally with a tapering edge.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    center, radius
        Disc in scaled coordinates (``u``, ``v`` in [0, 1]).
    edge
        Width of a linear taper outside the disc (0 = a sharp boolean core).

    Returns
    -------
    numpy.ndarray
        Booleans (``edge == 0``) or a pattern in [0, 1].

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(5, seed=0)
    >>> w = sigel.sim.core(ad.obsm["spatial"], radius=0.2, edge=0.1)
    >>> float(w.max())
    1.0
    """
    u, v = _uv(coords)
    r = np.hypot(u - center[0], v - center[1])
    if edge <= 0:
        return r <= radius
    return np.clip(1.0 - (r - radius) / edge, 0.0, 1.0)


def ring(coords, *, center=(0.5, 0.5), radius: float = 0.3, width: float = 0.1) -> np.ndarray:
    """An annulus (ring) of the given ``radius`` and ``width``.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    center, radius, width
        Centre, radius and width of the ring in scaled coordinates (``u``,
        ``v`` in [0, 1]).

    Returns
    -------
    numpy.ndarray
        Booleans (True on the ring).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(5, seed=0)
    >>> int(sigel.sim.ring(ad.obsm["spatial"]).sum()) > 0
    True
    """
    u, v = _uv(coords)
    r = np.hypot(u - center[0], v - center[1])
    return np.abs(r - radius) <= width / 2


def crescent(coords, *, center=(0.5, 0.5), radius: float = 0.35, width: float = 0.1,
             direction: float = 180.0, span: float = 180.0) -> np.ndarray:
    """A crescent: the part of a ring within ``span`` degrees around ``direction``.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    center, radius, width
        The ring, in scaled coordinates (``u``, ``v`` in [0, 1]).
    direction
        Direction of the crescent's middle in degrees (0 = +u, 90 = +v).
    span
        Angular extent in degrees.

    Returns
    -------
    numpy.ndarray
        Booleans (True on the crescent).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(5, seed=0)
    >>> c = sigel.sim.crescent(ad.obsm["spatial"])
    >>> bool((c <= sigel.sim.ring(ad.obsm["spatial"], radius=0.35)).all())
    True
    """
    u, v = _uv(coords)
    ang = np.degrees(np.arctan2(v - center[1], u - center[0]))
    diff = np.abs((ang - direction + 180.0) % 360.0 - 180.0)
    return ring(coords, center=center, radius=radius, width=width) & (diff <= span / 2)


def interface(coords, labels, region, *, width: float = 1.5, side: str = "both") -> np.ndarray:
    """Spots along the interface between ``region`` and the rest of the tissue (a rim or crescent).

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    labels
        Region label of every spot (e.g. annotated layers or domains).
    region
        The label (or list of labels) whose boundary is traced.
    width
        Distance from the interface, in spot spacings.
    side
        ``"inside"`` (the region's rim), ``"outside"`` (just beyond it) or ``"both"``.

    Returns
    -------
    numpy.ndarray
        Booleans.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(5, seed=0)
    >>> rim = sigel.sim.interface(ad.obsm["spatial"], ad.obs["domain"], "1", width=1.0)
    >>> 0 < rim.sum() < ad.n_obs
    True
    """
    from scipy.spatial import cKDTree

    assert_one_of("side", side, ("inside", "outside", "both"))
    coords = np.asarray(coords, dtype=np.float64)
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    regs = [str(r) for r in np.atleast_1d(region)]
    inside = np.isin(lab, regs)
    if not inside.any() or inside.all():
        raise SigelInputError(f"region {region!r} must hold some but not all spots")
    d = width * _median_nn(coords)
    d_to_out, _ = cKDTree(coords[~inside]).query(coords)
    d_to_in, _ = cKDTree(coords[inside]).query(coords)
    rim_in = inside & (d_to_out <= d)
    rim_out = ~inside & (d_to_in <= d)
    return {"inside": rim_in, "outside": rim_out, "both": rim_in | rim_out}[side]


def checkerboard(coords, n: int = 3) -> np.ndarray:
    """An ``n x n`` checkerboard over the scaled tissue coordinates.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates.
    n
        Squares per side.

    Returns
    -------
    numpy.ndarray
        Booleans (True on the "black" squares).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(5, seed=0)
    >>> 0.3 < sigel.sim.checkerboard(ad.obsm["spatial"]).mean() < 0.7
    True
    """
    assert_positive("n", n)
    u, v = _uv(coords)
    i = np.minimum((u * n).astype(int), n - 1)
    j = np.minimum((v * n).astype(int), n - 1)
    return (i + j) % 2 == 1


def from_mask(coords, mask) -> np.ndarray:
    """Read a user mask or label image at the spots.

    Parameters
    ----------
    coords
        ``(n_spots, 2)`` coordinates; x maps to image columns, y to rows,
        both scaled to the image extent (nearest pixel).
    mask
        2-D boolean mask or label image.

    Returns
    -------
    numpy.ndarray
        The image value at every spot.

    Examples
    --------
    >>> import numpy as np, sigel
    >>> xy = np.c_[[0.0, 1.0], [0.0, 1.0]]
    >>> sigel.sim.from_mask(xy, np.eye(2, dtype=bool)).tolist()
    [True, True]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise SigelInputError(f"mask must be a 2-D image; got shape {mask.shape}")
    return _sample_image(np.asarray(coords, dtype=np.float64), mask)
