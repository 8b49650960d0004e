"""Homogeneous mode: spatially homogeneous controls and the fits behind them.

`homogeneous` draws each gene's own zero-inflated negative binomial
(`fit_zinb`, method of moments) independently at every spot; `permuted`
shuffles the gene's observed values over the spots instead. Both are the
controls of `sigel.tl.svg`; the recipe is in the `sigel.sim` docstring.
`size_factors`, the seeding rule (``_rng``), the gamma-Poisson sampler and
the engine names are shared with the pattern mode (`sigel.sim.patterned`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validate import SigelInputError, assert_one_of, assert_positive

_ENGINES = ("numpy", "r")


# ============================================================== inputs
def _rng(seed) -> np.random.Generator:
    from .._settings import settings

    return np.random.default_rng(settings.seed if seed is None else seed)


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


_size_factors = size_factors  # for functions whose `size_factors` argument hides it


def _gamma_poisson(rng, mu, theta):
    """Negative binomial (mean ``mu``, size ``theta``) as a gamma-Poisson mixture (faster than numpy's NB)."""
    return rng.poisson(rng.standard_gamma(theta) * (mu / theta))


# ============================================================== homogeneous mode
def fit_zinb(counts, library_size=None, *, size_factors=None, n_iter: int = 60, graph=None) -> pd.DataFrame:
    """Zero-inflated negative binomial per gene by the method of moments (vectorised).

    Parameters
    ----------
    counts
        Spots x genes counts (sparse or dense; an AnnData's ``X``).
    library_size
        Optional per-spot library sizes: fit the marginal of ``y / sf``
        (default: raw counts, ``sf = 1``).
    size_factors
        Per-spot size factors used as they are (instead of
        ``library_size``; e.g. the ones the controls will be drawn with).
    n_iter
        Bisection steps for the zero-inflation.
    graph
        Optional ``(n_spots, n_spots)`` spot neighbour graph (e.g.
        `sigel.tissue.spatial_neighbors`; rows are scaled to sum to 1). When
        given, the zero-inflation is fitted as without it (to the observed
        zero fraction and the marginal moments), and the NB's variance is then
        the *non-spatial* part of the gene's variance: the mean squared
        difference between each spot's ``y / sf`` and the mean of its
        neighbours, divided by its expectation under independence, ``1 +
        sum_j w_sj**2`` (`local_variance`). A gene whose expression follows a
        tissue pattern then gets controls with its own spot-to-spot noise, not
        with the spread of its pattern; for a homogeneous gene both estimates
        agree. Default: the marginal variance.

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
    if size_factors is not None and library_size is not None:
        raise SigelInputError("give `library_size` or `size_factors`, not both")
    if size_factors is None:
        sf = _size_factors(None, library_size, X.shape[0])
    else:
        sf = np.asarray(size_factors).ravel()  # as given (the draws use the same array)
        if len(sf) != X.shape[0]:
            raise SigelInputError(f"size_factors has {len(sf)} values for {X.shape[0]} spots")
    out = _fit_zinb(X, sf, n_iter, graph=graph)
    if index is not None:
        out.index = index
    return out


def _fit_zinb(X, sf, n_iter=60, graph=None) -> pd.DataFrame:
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
    if graph is not None:  # zero-inflation from the marginal fit, NB variance from the local one
        v = np.maximum(local_variance(Y, _check_graph(graph, len(ok))[ok][:, ok]), 0.0)
    mu, inv_theta = _zinb_params(pi, m, v, c)
    mu = np.where(m > 0, mu, 0.0)
    theta = np.full_like(m, np.inf)
    od = inv_theta > 1e-8
    theta[od] = 1.0 / inv_theta[od]
    return pd.DataFrame({"mu": mu, "theta": theta, "pi": pi, "zero_frac": p0})


def _check_graph(graph, n: int) -> sp.csr_matrix:
    if not sp.issparse(graph) and not isinstance(graph, np.ndarray):
        raise SigelInputError(f"graph must be a (spots x spots) sparse matrix or array; got {type(graph).__name__}")
    if graph.shape != (n, n):
        raise SigelInputError(f"graph has shape {graph.shape}; expected ({n}, {n}) for {n} spots")
    return sp.csr_matrix(graph, dtype=np.float64)


def local_variance(Y, graph, *, block: int = 1024) -> np.ndarray:
    """Per-gene variance left after removing each spot's neighbourhood mean (spots x genes ``Y``).

    With ``W`` the graph scaled to row sums 1 (spots without neighbours are
    left out), ``r = y - W y`` and, for independent spots of equal variance
    ``s2``, ``E[r_s**2] = s2 * (1 + sum_j w_sj**2)``, so ``mean(r**2) /
    mean(1 + sum_j w_sj**2)`` estimates the variance a gene would have
    without its spatial pattern. Genes are processed in blocks of ``block``
    columns (memory ``O(spots * block)``).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sigel.sim.nulls import local_variance
    >>> rng = np.random.default_rng(0)
    >>> idx = np.arange(400)
    >>> W = sp.csr_matrix((np.ones(800), (np.repeat(idx, 2), np.r_[[(idx - 1) % 400, (idx + 1) % 400]].T.ravel())))
    >>> noise = rng.normal(size=(400, 1))
    >>> trend = np.sin(idx / 400 * 2 * np.pi)[:, None] * 5
    >>> float(np.round(local_variance(noise, W)[0], 1)), float(np.round(local_variance(noise + trend, W)[0], 1))
    (1.0, 1.0)
    """
    W = sp.csr_matrix(graph, dtype=np.float64)
    deg = np.asarray(W.sum(axis=1)).ravel()
    has = deg > 0
    W = sp.csr_matrix(sp.diags(np.where(has, 1.0 / np.where(has, deg, 1.0), 0.0)) @ W)
    inflate = float(np.mean(1.0 + np.asarray(W.multiply(W).sum(axis=1)).ravel()[has]))
    Y = sp.csc_matrix(Y, dtype=np.float64) if sp.issparse(Y) else np.asarray(Y, dtype=np.float64)
    G = Y.shape[1]
    out = np.empty(G)
    for s in range(0, G, int(block)):
        Yb = Y[:, s:s + block]
        Yb = Yb.toarray() if sp.issparse(Yb) else Yb
        R = (Yb - W @ Yb)[has]
        out[s:s + block] = (R * R).mean(axis=0) / inflate
    return out


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


def draw_zinb(rng, params: pd.DataFrame, sf: np.ndarray, n_draws: int) -> sp.csr_matrix:
    """``n_draws`` homogeneous controls of every gene of ``params`` (`fit_zinb` output) at size factors ``sf``.

    Returns a sparse ``(spots, genes * n_draws)`` matrix, gene-major columns
    (the draws of gene 0, then of gene 1, ...), from the numpy generator ``rng``.
    """
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
        from .._rbridge import simulate_homogeneous_r

        return simulate_homogeneous_r(X, int(n_draws), library_size=library_size, seed=seed)
    sf = size_factors(None, library_size, X.shape[0])
    if params is None:
        params = _fit_zinb(X, sf)
    Y = draw_zinb(_rng(seed), params, sf, int(n_draws)).toarray()
    return Y.reshape(X.shape[0], X.shape[1], int(n_draws)).astype(np.int64)


def draw_permuted(rng, X, sf, n_draws: int) -> sp.csr_matrix:
    """``n_draws`` shuffled copies of every column of dense ``X`` (spots x genes), gene-major columns.

    With size factors ``sf`` a value moved from spot ``t`` to ``s`` is scaled
    by ``sf_s / sf_t`` (depth-adjusted); ``None``: a pure shuffle.
    """
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
    Y = draw_permuted(_rng(seed), X, sf, int(n_draws)).toarray().astype(np.float64)
    return Y.reshape(X.shape[0], X.shape[1], int(n_draws))
