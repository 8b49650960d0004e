"""Pseudo-gene simulator: designated patterns and spatially homogeneous controls.

One semantics, two engines: ``engine="numpy"`` (here) and ``engine="r"``
(the R package's ``simulatePattern()`` / ``simulateHomogeneous()``, called
through rpy2). Both follow exactly the recipe below, so they agree in
distribution (the random streams differ).

Pattern mode (`pseudo_gene`)
----------------------------
1. **Template -> region weights** ``W`` (spots x regions, rows sum to 1).
   A template is one value per spot or an image:

   - labels (strings, integers, categorical) -> one region per label
     (one-hot rows);
   - booleans, or numbers that are all 0/1 -> regions ``"background"``
     (False) and ``"pattern"`` (True);
   - other numbers in [0, 1] -> a continuous pattern ``w``: regions
     ``"background"`` and ``"pattern"`` with weights ``(1 - w, w)``;
   - a 2-D array (a mask or label image) is first read at every spot: the
     spot coordinates are scaled to [0, 1] per axis (x -> image column,
     y -> image row) and the nearest pixel is taken.

2. **Size factors** ``sf`` (mean 1): each spot's library size (row sums
   of the calibration counts, or ``library_size``) divided by its mean; 1
   without either. Spots with ``sf = 0`` are left out of the calibration
   (steps 3 and 6, and `fit_zinb`) and get mean 0.
3. **Region means** ``m_r``: explicit (``means``) or, with ``quantiles``,
   the ``q_r`` quantile (type 7, as ``numpy.quantile`` and R's default) over
   the observed genes (those with any count) of their mean size-factor-
   normalised count in region ``r``. A spot belongs to the region of its
   largest weight (``w >= 0.5`` -> ``"pattern"`` for continuous templates).
4. **Tapered edges** (``taper > 0``): ``W <- K W / rowSums(K)`` with a
   Gaussian kernel ``K_st = exp(-d_st^2 / (2 s^2))`` truncated at ``d <= 3s``,
   ``s = taper x`` the median nearest-neighbour distance between spots (so
   ``taper`` is in spot spacings, whatever the coordinate units).
5. **Mean per spot**: ``mu_s = sf_s * sum_r W_sr m_r``.
6. **Mean-dispersion trend** ``CV^2 = a0 + a1 / mu``, fitted to the observed
   genes (mean ``mu_g`` and variance ``v_g`` of the size-factor-normalised
   counts of genes with ``mu_g > 0, v_g > 0``) as a gamma GLM with identity
   link (iteratively reweighted least squares, weights ``1 / fit^2``, 25
   iterations; Brennecke et al. 2013), then ``a0, a1`` clipped at 0. Without
   calibration counts ``trend`` (default ``(0.1, 1.0)``) is used.
7. **Counts**: negative binomial with mean ``mu_s`` and variance
   ``a0 mu^2 + a1 mu``, i.e. size ``theta = 1 / (a0 + (a1 - 1) / mu_s)``;
   Poisson where ``a0 + (a1 - 1) / mu_s <= 1e-8`` (no over-dispersion left).

Homogeneous mode (`homogeneous`)
--------------------------------
Each gene's own marginal, a zero-inflated negative binomial fitted by the
method of moments (vectorised over genes; `fit_zinb`), shuffled over the
tissue: controls are drawn independently at every spot. By default the
marginal is that of the raw counts (``sf = 1``: a pure shuffle, the null of
"no spatial structure in the counts", as SPARK-X tests it); with
``library_size`` the controls keep each spot's depth instead
(``y_s ~ ZINB(pi, sf_s mu, theta)``, moments taken on ``y / sf``). With
``m``, ``v`` the mean and variance of ``y / sf``, ``p0`` the observed
fraction of zeros and ``c = mean(1 / sf)``, for a zero-inflation ``pi`` the
NB mean is ``mu = m / (1 - pi)`` and its over-dispersion
``1/theta = (v / (1 - pi) - c mu) / mu^2 - pi`` (clipped at 0: Poisson);
``pi`` solves ``pi + (1 - pi) NB0(mu, theta) = p0`` by bisection (``pi = 0``
when the negative binomial alone has enough zeros). These are the spatially
homogeneous controls of `sigel.tl.svg`.

Template builders (`layers`, `core`, `ring`, `crescent`, `interface`,
`checkerboard`, `from_mask`) return one value per spot. Geometric ones
work on coordinates scaled to [0, 1] per axis (``u`` = x, ``v`` = y, as
``obs['u','v']`` of `sigel.datasets.synthetic_tissue`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import tissue
from ._validate import SigelInputError, as_coordinates, assert_one_of, assert_positive

DEFAULT_TREND = (0.1, 1.0)
_ENGINES = ("numpy", "r")
BACKGROUND, PATTERN = "background", "pattern"

__all__ = [
    "pseudo_gene", "homogeneous", "permuted", "fit_zinb", "fit_trend", "region_weights", "region_means",
    "size_factors", "pseudo_images", "layers", "core", "ring", "crescent", "interface",
    "checkerboard", "from_mask",
]


# ============================================================== inputs
def _rng(seed) -> np.random.Generator:
    from ._settings import settings

    return np.random.default_rng(settings.seed if seed is None else seed)


def _tissue(data, counts, spatial_key, layer):
    """Coordinates (n x 2) and calibration counts (spots x genes, CSR or None)."""
    try:
        import anndata as ad
        is_ad = isinstance(data, ad.AnnData)
    except ImportError:  # pragma: no cover
        is_ad = False
    if is_ad:
        coords = tissue.coordinates(data, spatial_key)
        if counts is None:
            counts = tissue.counts(data, layer)
    else:
        coords = np.asarray(data, dtype=np.float64)
        coords = as_coordinates(coords, coords.shape[0] if coords.ndim == 2 else -1, "coords")
    if counts is not None:
        counts = sp.csr_matrix(counts, dtype=np.float64) if sp.issparse(counts) else \
            sp.csr_matrix(np.asarray(counts, dtype=np.float64))
        if counts.shape[0] != coords.shape[0]:
            raise SigelInputError(
                f"counts have {counts.shape[0]} rows but there are {coords.shape[0]} spots; "
                "pass counts as spots x genes"
            )
        if counts.nnz and (counts.data.min() < 0 or not np.all(np.isfinite(counts.data))):
            raise SigelInputError("counts must be finite and >= 0")
    return coords, counts


def size_factors(counts=None, library_size=None, n_spots: int | None = None) -> np.ndarray:
    """Per-spot size factors with mean 1 (library size / mean library size).

    Parameters
    ----------
    counts
        Calibration counts (spots x genes); their row sums are the library sizes.
    library_size
        Explicit library sizes (one per spot), used instead of the row sums.
    n_spots
        Number of spots (only needed when neither is given: all ones).

    Returns
    -------
    numpy.ndarray
        ``(n_spots,)`` float64.

    Examples
    --------
    >>> import numpy as np, sigel
    >>> sigel.sim.size_factors(library_size=np.array([1.0, 3.0]))
    array([0.5, 1.5])
    """
    if library_size is not None:
        lib = np.asarray(library_size, dtype=np.float64).ravel()
    elif counts is not None:
        lib = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    else:
        return np.ones(int(n_spots))
    if not np.all(np.isfinite(lib)) or np.any(lib < 0):
        raise SigelInputError("library sizes must be finite and >= 0")
    if lib.mean() <= 0:
        raise SigelInputError("library sizes are all zero")
    sf = lib / lib.mean()
    return sf


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


# ============================================================== calibration
def region_means(counts, hard, regions, quantiles, sf) -> dict:
    """Quantile targets (step 3): ``q_r`` quantile of the genes' regional mean normalised counts.

    Parameters
    ----------
    counts
        Calibration counts (spots x genes, sparse or dense).
    hard
        Region index of every spot.
    regions
        Region names.
    quantiles
        ``{region: q}`` for every region.
    sf
        Size factors (mean 1).

    Returns
    -------
    dict
        ``{region: mean}``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sigel
    >>> X = sp.csr_matrix(np.array([[1.0, 4.0], [3.0, 8.0]]))
    >>> sigel.sim.region_means(X, np.array([0, 1]), ["a", "b"], {"a": 0.0, "b": 1.0}, np.ones(2))
    {'a': 1.0, 'b': 8.0}
    """
    ok = sf > 0  # spots without counts carry no information on expression levels
    Y = sp.csr_matrix(sp.diags(1.0 / sf[ok]) @ sp.csr_matrix(counts)[ok])
    hard = np.asarray(hard)[ok]
    keep = np.asarray(counts.sum(axis=0)).ravel() > 0
    if not keep.any():
        raise SigelInputError("the calibration counts are all zero")
    out = {}
    for r, name in enumerate(regions):
        sel = hard == r
        if not sel.any():
            raise SigelInputError(
                f"region {name!r} holds no spot (a spot belongs to its largest-weight region); "
                "give explicit `means` or change the template"
            )
        gm = np.asarray(Y[sel].mean(axis=0)).ravel()[keep]
        out[name] = float(np.quantile(gm, float(quantiles[name])))
    return out


def fit_trend(counts, library_size=None, *, n_iter: int = 25) -> tuple[float, float]:
    """Fit the mean-dispersion trend ``CV^2 = a0 + a1 / mu`` to observed genes (gamma GLM, identity link).

    Parameters
    ----------
    counts
        Spots x genes counts (sparse or dense).
    library_size
        Optional per-spot library sizes (default: row sums of ``counts``).
    n_iter
        IRLS iterations.

    Returns
    -------
    (a0, a1) : tuple of float
        Both clipped at 0.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(50, seed=0)
    >>> a0, a1 = sigel.sim.fit_trend(ad.X)
    """
    X = sp.csr_matrix(counts, dtype=np.float64)
    sf = size_factors(X, library_size)
    return _fit_trend(X, sf, n_iter)


def _fit_trend(X, sf, n_iter=25):
    ok = sf > 0
    Y = sp.csr_matrix(sp.diags(1.0 / sf[ok]) @ sp.csr_matrix(X)[ok])
    n = Y.shape[0]
    mu = np.asarray(Y.mean(axis=0)).ravel()
    ex2 = np.asarray(Y.multiply(Y).mean(axis=0)).ravel()
    v = (ex2 - mu ** 2) * n / max(n - 1, 1)
    ok = (mu > 0) & (v > 0)
    if ok.sum() < 3:
        raise SigelInputError("need at least 3 expressed, variable genes to fit the mean-dispersion trend")
    cv2 = v[ok] / mu[ok] ** 2
    x = 1.0 / mu[ok]
    A = np.column_stack([np.ones_like(x), x])
    w = np.ones_like(x)
    coef = np.zeros(2)
    for _ in range(int(n_iter)):
        Aw = A * w[:, None]
        coef = np.linalg.solve(A.T @ Aw, Aw.T @ cv2)
        fit = np.maximum(A @ coef, 1e-8)
        w = 1.0 / fit ** 2
    return float(max(coef[0], 0.0)), float(max(coef[1], 0.0))


def _nb_draw(rng, mu, a0, a1, size):
    """NB(mean mu, var a0 mu^2 + a1 mu) draws of shape ``size`` (mu broadcast over the last axis)."""
    mu = np.asarray(mu, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = a0 + (a1 - 1.0) / mu
    pois = ~(inv > 1e-8) | (mu <= 0)
    out = np.empty(size, dtype=np.int64)
    mub = np.broadcast_to(mu, size)
    pb = np.broadcast_to(pois, size)
    if pb.any():
        out[pb] = rng.poisson(mub[pb])
    nb = ~pb
    if nb.any():
        theta = 1.0 / np.broadcast_to(inv, size)[nb]
        out[nb] = _gamma_poisson(rng, mub[nb], theta)
    return out


def _gamma_poisson(rng, mu, theta):
    """Negative binomial (mean ``mu``, size ``theta``) as a gamma-Poisson mixture (faster than numpy's NB)."""
    return rng.poisson(rng.standard_gamma(theta) * (mu / theta))


# ============================================================== pattern mode
def pseudo_gene(
    data,
    template,
    *,
    quantiles: dict | None = None,
    means: dict | None = None,
    taper: float = 0.0,
    n_draws: int = 1,
    counts=None,
    library_size=None,
    trend: tuple[float, float] | None = None,
    layer: str | None = None,
    spatial_key: str = "spatial",
    engine: str = "numpy",
    seed: int | None = None,
    return_params: bool = False,
):
    """Simulate a pseudo-gene with a designated spatial pattern (negative binomial counts).

    See the module docstring for the exact recipe, shared by both engines.

    Parameters
    ----------
    data
        The tissue: an AnnData (coordinates by the rule of
        `sigel.tissue.coordinates`: ``obsm[spatial_key]``, else ``obs['x','y']``,
        else the Visium array coordinates; calibration counts from ``X`` or
        ``layers[layer]``) or an
        ``(n_spots, 2)`` coordinate array.
    template
        One value per spot (region labels, booleans, or a pattern in [0, 1])
        or a 2-D mask/label image; see the template builders of this module.
    quantiles
        ``{region: q}``: each region's mean is the ``q`` quantile of the
        observed genes' regional means (needs calibration counts).
    means
        ``{region: mean}``: explicit mean counts per region (at size factor 1).
        Exactly one of ``quantiles`` and ``means``.
    taper
        Width of tapered region edges in spot spacings (0 = sharp).
    n_draws
        Number of independent pseudo-genes.
    counts
        Calibration counts (spots x genes) when ``data`` is a coordinate array
        (for an AnnData they default to its counts).
    library_size
        Per-spot library sizes (default: row sums of the calibration counts).
    trend
        ``(a0, a1)`` of ``CV^2 = a0 + a1 / mu``; default: fitted to the
        calibration counts, else ``(0.1, 1.0)``.
    layer, spatial_key
        Where an AnnData keeps counts and coordinates.
    engine
        ``"numpy"`` or ``"r"`` (the R package's ``simulatePattern()``
        through rpy2).
    seed
        Random seed (same seed, same engine -> same counts).
    return_params
        Also return a dict with ``regions``, ``region_means``, ``trend``,
        ``size_factors``, ``mu`` (per-spot means) and ``weights``.

    Returns
    -------
    numpy.ndarray
        ``(n_spots, n_draws)`` integer counts (and the params dict when
        ``return_params``).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(60, seed=0)
    >>> tpl = sigel.sim.layers(ad.obsm["spatial"], n_layers=3)
    >>> y = sigel.sim.pseudo_gene(ad, tpl, quantiles={"layer0": 0.9, "layer1": 0.2, "layer2": 0.2},
    ...                           n_draws=5, taper=1.0, seed=0)
    >>> y.shape
    (718, 5)
    """
    assert_one_of("engine", engine, _ENGINES)
    assert_positive("n_draws", n_draws)
    assert_positive("taper", taper, allow_zero=True)
    if (quantiles is None) == (means is None):
        raise SigelInputError("give exactly one of `quantiles` ({region: q}) or `means` ({region: mean})")
    coords, X = _tissue(data, counts, spatial_key, layer)
    if quantiles is not None:
        if X is None:
            raise SigelInputError("`quantiles` need calibration counts (an AnnData or `counts=`); or give `means`")
        for k, q in quantiles.items():
            if not 0 <= float(q) <= 1:
                raise SigelInputError(f"quantile for region {k!r} must be in [0, 1]; got {q!r}")
    else:
        for k, m in means.items():
            if not (np.isfinite(float(m)) and float(m) >= 0):
                raise SigelInputError(f"mean for region {k!r} must be finite and >= 0; got {m!r}")
    if trend is not None:
        trend = (float(trend[0]), float(trend[1]))
        if min(trend) < 0:
            raise SigelInputError(f"`trend` (a0, a1) must be >= 0; got {trend}")
    if library_size is not None and len(np.ravel(library_size)) != coords.shape[0]:
        raise SigelInputError(f"library_size has {len(np.ravel(library_size))} values for {coords.shape[0]} spots")

    if engine == "r":
        from ._rbridge import simulate_pattern_r

        return simulate_pattern_r(coords, template, counts=X, quantiles=quantiles, means=means, taper=taper,
                                  n_draws=int(n_draws), library_size=library_size, trend=trend, seed=seed,
                                  return_params=return_params)

    W, regions, hard = region_weights(coords, template, taper=taper)
    target = quantiles if quantiles is not None else means
    missing = [r for r in regions if r not in target]
    if missing:
        raise SigelInputError(f"no target for regions {missing}; the template's regions are {regions}")
    sf = size_factors(X, library_size, coords.shape[0])
    if quantiles is not None:
        m = region_means(X, hard, regions, quantiles, sf)
    else:
        m = {r: float(means[r]) for r in regions}
    mu = sf * (W @ np.array([m[r] for r in regions]))
    if trend is None:
        trend = _fit_trend(X, sf) if X is not None else DEFAULT_TREND
    rng = _rng(seed)
    y = _nb_draw(rng, mu[:, None], trend[0], trend[1], (coords.shape[0], int(n_draws)))
    if return_params:
        return y, dict(regions=regions, region_means=m, trend=trend, size_factors=sf, mu=mu, weights=W)
    return y


# ============================================================== homogeneous mode
def fit_zinb(counts, library_size=None, *, n_iter: int = 60) -> pd.DataFrame:
    """Zero-inflated negative binomial per gene by the method of moments (vectorised).

    Parameters
    ----------
    counts
        Spots x genes counts (sparse or dense; an AnnData's ``X``).
    library_size
        Optional per-spot library sizes: fit the marginal of ``y / sf``
        (default: raw counts, ``sf = 1``).
    n_iter
        Bisection steps for the zero-inflation.

    Returns
    -------
    pandas.DataFrame
        One row per gene (positional index, or the columns of a DataFrame):
        ``mu`` (mean at size factor 1 of the NB part), ``theta`` (NB size,
        ``inf`` = Poisson), ``pi`` (zero-inflation), ``zero_frac`` (observed).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(30, seed=0)
    >>> p = sigel.sim.fit_zinb(ad.X)
    >>> list(p.columns)
    ['mu', 'theta', 'pi', 'zero_frac']
    """
    index = counts.columns if isinstance(counts, pd.DataFrame) else None
    X = sp.csr_matrix(np.asarray(counts, dtype=np.float64)) if not sp.issparse(counts) else \
        sp.csr_matrix(counts, dtype=np.float64)
    sf = size_factors(None, library_size, X.shape[0])
    out = _fit_zinb(X, sf, n_iter)
    if index is not None:
        out.index = index
    return out


def _fit_zinb(X, sf, n_iter=60) -> pd.DataFrame:
    ok = sf > 0  # moments over spots with counts (controls are 0 where sf = 0)
    X, sf = sp.csr_matrix(X)[ok], sf[ok]
    n = X.shape[0]
    Y = sp.csr_matrix(sp.diags(1.0 / sf) @ X)
    m = np.asarray(Y.mean(axis=0)).ravel()
    v = (np.asarray(Y.multiply(Y).mean(axis=0)).ravel() - m ** 2) * n / max(n - 1, 1)
    v = np.maximum(v, 0.0)
    Xc = sp.csc_matrix(X)
    Xc.eliminate_zeros()
    p0 = 1.0 - np.diff(Xc.indptr) / n
    c = float(np.mean(1.0 / sf))
    pi = np.zeros_like(m)
    need = (m > 0) & (_zinb_zero_prob(pi, m, v, c) < p0)
    if need.any():
        mn, vn, pn = m[need], v[need], p0[need]
        lo, hi = np.zeros_like(mn), np.clip(pn, 0.0, 1.0 - 1e-9)
        for _ in range(int(n_iter)):
            mid = 0.5 * (lo + hi)
            below = _zinb_zero_prob(mid, mn, vn, c) < pn
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        pi[need] = 0.5 * (lo + hi)
    mu, inv_theta = _zinb_params(pi, m, v, c)
    mu = np.where(m > 0, mu, 0.0)
    theta = np.full_like(m, np.inf)
    od = inv_theta > 1e-8
    theta[od] = 1.0 / inv_theta[od]
    return pd.DataFrame({"mu": mu, "theta": theta, "pi": pi, "zero_frac": p0})


def _zinb_params(pi, m, v, c):
    """NB mean and 1/theta (>= 0) matching mean ``m`` and variance ``v`` of y/sf at zero-inflation ``pi``."""
    mu = m / (1.0 - pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_theta = (v / (1.0 - pi) - c * mu) / mu ** 2 - pi
    inv_theta = np.where(np.isfinite(inv_theta), np.maximum(inv_theta, 0.0), 0.0)
    return mu, inv_theta


def _zinb_zero_prob(pi, m, v, c):
    mu, it = _zinb_params(pi, m, v, c)
    od = it > 1e-8
    safe = np.where(od, it, 1.0)
    nb0 = np.where(od, np.exp(-np.log1p(mu * safe) / safe), np.exp(-mu))
    return pi + (1.0 - pi) * nb0


def _draw_zinb(rng, params: pd.DataFrame, sf: np.ndarray, n_draws: int) -> sp.csr_matrix:
    """Controls for every gene of ``params``: sparse (spots x genes*n_draws), gene-major columns."""
    G = len(params)
    n = len(sf)
    mu = np.repeat(params["mu"].to_numpy(), n_draws)            # (G*n_draws,)
    theta = np.repeat(params["theta"].to_numpy(), n_draws)
    pi = np.repeat(params["pi"].to_numpy(), n_draws)
    M = sf[:, None] * mu[None, :]                               # spots x (G*n_draws)
    out = np.zeros((n, G * n_draws), dtype=np.float32)
    pois = ~np.isfinite(theta)
    if pois.any():
        out[:, pois] = rng.poisson(M[:, pois])
    nb = ~pois & (mu > 0)
    if nb.any():
        th = np.broadcast_to(theta[nb], (n, int(nb.sum())))
        out[:, nb] = _gamma_poisson(rng, M[:, nb], th)
    keep = rng.random((n, G * n_draws)) >= pi[None, :]
    out *= keep
    return sp.csr_matrix(out)


def homogeneous(
    counts,
    n_draws: int = 1,
    *,
    library_size=None,
    params: pd.DataFrame | None = None,
    engine: str = "numpy",
    seed: int | None = None,
) -> np.ndarray:
    """Spatially homogeneous controls: each gene's own ZINB marginal shuffled over the tissue.

    Parameters
    ----------
    counts
        Spots x genes counts (sparse or dense) of the genes to mimic.
    n_draws
        Controls per gene.
    library_size
        Optional per-spot library sizes: depth-aware controls
        (``ZINB(pi, sf_s mu, theta)``); default: a pure shuffle of the raw
        marginal (``sf = 1``).
    params
        Precomputed `fit_zinb` output (numpy engine only).
    engine
        ``"numpy"`` or ``"r"`` (the R package's ``simulateHomogeneous()``).
    seed
        Random seed.

    Returns
    -------
    numpy.ndarray
        ``(n_spots, n_genes, n_draws)`` integer counts.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, seed=0)
    >>> y = sigel.sim.homogeneous(ad.X, 3, seed=0)
    >>> y.shape
    (718, 20, 3)
    """
    assert_one_of("engine", engine, _ENGINES)
    assert_positive("n_draws", n_draws)
    X = sp.csr_matrix(counts, dtype=np.float64) if sp.issparse(counts) else \
        sp.csr_matrix(np.asarray(counts, dtype=np.float64))
    if library_size is not None and len(np.ravel(library_size)) != X.shape[0]:
        raise SigelInputError(f"library_size has {len(np.ravel(library_size))} values for {X.shape[0]} spots")
    if engine == "r":
        from ._rbridge import simulate_homogeneous_r

        return simulate_homogeneous_r(X, int(n_draws), library_size=library_size, seed=seed)
    sf = size_factors(None, library_size, X.shape[0])
    if params is None:
        params = _fit_zinb(X, sf)
    Y = _draw_zinb(_rng(seed), params, sf, int(n_draws)).toarray()
    return Y.reshape(X.shape[0], X.shape[1], int(n_draws)).astype(np.int64)


def _draw_permuted(rng, X, sf, n_draws: int) -> sp.csr_matrix:
    """Shuffled copies of every column of X (spots x genes, dense), gene-major columns, depth-adjusted by sf."""
    n, G = X.shape
    X = np.repeat(np.asarray(X, dtype=np.float64), n_draws, axis=1)          # gene-major copies
    perm = np.argsort(rng.random((n, G * n_draws)), axis=0)
    Y = np.take_along_axis(X, perm, axis=0)
    if sf is not None:
        src = sf[perm]
        Y = np.divide(Y * sf[:, None], src, out=np.zeros_like(Y), where=src > 0)
    return sp.csr_matrix(Y.astype(np.float32))


def permuted(counts, n_draws: int = 1, *, library_size=None, seed: int | None = None) -> np.ndarray:
    """Nonparametric homogeneous controls: each gene's observed values shuffled over the spots.

    With ``library_size`` the shuffle keeps each spot's depth: the value moved
    from spot ``t`` to spot ``s`` is ``y_t * sf_s / sf_t`` (not an integer),
    so its library-size-normalised value is exactly the gene's normalised
    value at ``t``. The permutation alternative to `homogeneous` for
    `sigel.tl.svg` (``null="permutation"``): it keeps the marginal exactly
    where a ZINB fit does not (e.g. log-normal rather than gamma noise).

    Parameters
    ----------
    counts
        Spots x genes counts (sparse or dense).
    n_draws
        Controls per gene.
    library_size
        Per-spot library sizes (depth-adjusted shuffle); default a plain shuffle.
    seed
        Random seed.

    Returns
    -------
    numpy.ndarray
        ``(n_spots, n_genes, n_draws)`` float64 values.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(10, seed=0)
    >>> y = sigel.sim.permuted(ad.X, 2, seed=0)
    >>> bool((y[:, 0, 0].sum() == ad.X[:, 0].sum()))
    True
    """
    assert_positive("n_draws", n_draws)
    X = counts.toarray() if sp.issparse(counts) else np.asarray(counts, dtype=np.float64)
    sf = None if library_size is None else size_factors(None, library_size, X.shape[0])
    Y = _draw_permuted(_rng(seed), X, sf, int(n_draws)).toarray().astype(np.float64)
    return Y.reshape(X.shape[0], X.shape[1], int(n_draws))


# ============================================================== images for pseudo-genes
LIB_COLUMN = "_sigel_library_size"


def pseudo_images(adata, counts, names, settings: dict, *, library_size=None):
    """Gene images of simulated genes on the grid of a model's training images.

    Parameters
    ----------
    adata
        The tissue the counts were simulated on (same spots, same order);
        supplies coordinates.
    counts
        Spots x pseudo-genes counts (sparse or dense).
    names
        Pseudo-gene names (one per column).
    settings
        ``GeneImages.settings`` of the model's images (``model.images_.settings``).
    library_size
        Per-spot library size of the *real* genes (default: the library size
        the model's images used: ``obs[settings['library_size_key']]`` or the
        row sums of ``adata``'s counts), so pseudo-genes are normalised
        exactly as the real genes were.

    Returns
    -------
    GeneImages
        One image per pseudo-gene (none is filtered out).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, seed=0)
    >>> im = sigel.GeneImages.from_anndata(ad)
    >>> y = sigel.sim.homogeneous(ad.X, 2, seed=0).reshape(ad.n_obs, -1)
    >>> pim = sigel.sim.pseudo_images(ad, y, [f"c{i}" for i in range(40)], im.settings)
    >>> pim.shape == im.shape
    True
    """
    import anndata as ad

    from .data import GeneImages

    opts = GeneImages.image_options(settings)
    if library_size is None:
        library_size = real_library_size(adata, settings)
    C = sp.csr_matrix(counts, dtype=np.float32) if sp.issparse(counts) else \
        sp.csr_matrix(np.asarray(counts, dtype=np.float32))
    if C.shape[0] != adata.n_obs:
        raise SigelInputError(f"pseudo-gene counts have {C.shape[0]} spots; the tissue has {adata.n_obs}")
    spatial_key = opts.get("spatial_key", "spatial")
    cols = [c for c in ("array_row", "array_col", "x", "y") if c in adata.obs]
    obs = adata.obs[cols].copy()
    obs[LIB_COLUMN] = np.asarray(library_size, dtype=np.float64)
    tmp = ad.AnnData(X=C, obs=obs, var=pd.DataFrame(index=pd.Index([str(n) for n in names])))
    if spatial_key in adata.obsm:
        tmp.obsm[spatial_key] = np.asarray(adata.obsm[spatial_key])
    # pseudo-gene values are drawn here (depth-scaled permutations need not be whole numbers)
    opts.update(layer=None, library_size_key=LIB_COLUMN, min_spots=0, exclude_prefixes=(), counts=False)
    # same library sizes -> same target sum (their median) as the real genes' images
    return GeneImages.from_anndata(tmp, **opts)


def real_library_size(adata, settings: dict) -> np.ndarray:
    """Library size per spot as the model's images computed it."""
    key = settings.get("library_size_key")
    if key is not None and key != LIB_COLUMN:
        if key not in adata.obs:
            raise SigelInputError(f"the model's images used adata.obs[{key!r}] as library size; it is missing")
        return tissue.library_size(adata, library_size_key=key)
    return tissue.library_size(adata, settings.get("layer"))


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
