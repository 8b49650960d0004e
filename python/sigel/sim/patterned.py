"""Pattern mode: `pseudo_gene`, negative binomial pseudo-genes with a designated spatial pattern.

Region means calibrated to observed genes (`region_means`), the
mean-dispersion trend (`fit_trend`) and the draws; the recipe (steps 1-7)
is in the `sigel.sim` docstring.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import tissue
from .._validate import SigelInputError, as_coordinates, assert_one_of, assert_positive
from .nulls import _ENGINES, _gamma_poisson, _rng, size_factors
from .templates import region_weights

DEFAULT_TREND = (0.1, 1.0)


# ============================================================== inputs
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
        from .._rbridge import simulate_pattern_r

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
