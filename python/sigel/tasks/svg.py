"""Spatially variable genes: distance from simulated homogeneous controls in the embedding space.

For every gene, ``n_null`` spatially homogeneous controls are simulated
from the gene's own marginal spread over the tissue, following each spot's
depth (by default a zero-inflated negative binomial with mean proportional
to the spot's size factor, fitted to the gene's spot-to-neighbour variance
so that it carries the gene's noise but not its pattern,
`sigel.sim.homogeneous`; or its values permuted, `sigel.sim.permuted`),
imaged exactly as the real genes were and embedded with the trained
encoder, in batches. Homogeneous controls of genes of similar expression
level land in the same place, so the controls of the 101 genes nearest in
level are pooled (``reference="level"``): the score of a gene is the
distance of its vector from their mean, divided by their typical spread.
Each control gets the same score (leave one out), so under the null a real
gene and the controls are exchangeable; the null scores are pooled over
the genes of similar expression level (quantile bins of the mean count) to
give fine-grained empirical p-values, then Benjamini-Hochberg q-values.
``reference="gene"`` compares each gene with its own ``n_null`` controls
instead (``n_null + 1`` are simulated; the default before).

`compare_svg` runs this next to a SPARK-X-style test (the R package's
``sigelSparkX()``, through rpy2) and Moran's I (`morans_i`) on the same genes.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys
from .._settings import logger, settings
from .._stats import bh
from .._validate import SigelInputError, assert_one_of, assert_positive
from .. import tissue
from ._model import check_model, model_image_options, same_grid

__all__ = ["svg", "svg_scores", "compare_svg", "morans_i", "bh", "control_images", "embed_with_controls"]

METRICS = ("cosine", "euclidean", "whitened")
VARIANCES = ("local", "marginal")
REFERENCES = ("level", "gene")
LEVEL_WINDOW = 101


# ====================================================================== helpers

def real_images(model, adata, genes=None, opts: dict | None = None):
    """The real genes' images rebuilt from ``adata`` with the model's image options."""
    from ..data import GeneImages

    opts = model_image_options(model) if opts is None else opts
    return GeneImages.from_anndata(adata, genes=genes, **opts)


def _normalise(Z):
    n = np.linalg.norm(Z, axis=-1, keepdims=True)
    return Z / np.maximum(n, 1e-12)


# ====================================================================== core
def svg_scores(real, controls, level=None, *, n_bins: int = 10, min_bin: int = 50, metric: str = "cosine",
               reference: str = "level", window: int = LEVEL_WINDOW, floor: float = 0.25, tail: bool = True,
               index=None) -> pd.DataFrame:
    """Scores, pooled-null p-values and q-values from real and control embeddings (the core of `svg`).

    Parameters
    ----------
    real
        ``(G, D)`` embeddings of the real genes.
    controls
        ``(G, n, D)`` embeddings of each gene's homogeneous controls
        (``reference="level"``: ``n >= 1``; ``"gene"``: ``n = n_null + 1 >= 3``).
    level
        ``(G,)`` expression level; the reference of ``"level"`` is taken from
        the genes nearest in level, and null scores are pooled over quantile
        bins of it. ``None``: all genes alike.
    n_bins
        Number of expression bins (fewer when a bin would hold < ``min_bin`` genes).
    min_bin
        Minimum number of genes per bin.
    metric
        ``"cosine"`` (vectors scaled to unit length first), ``"euclidean"``,
        or ``"whitened"``: unit length, then distances measured in the
        controls' own covariance, pooled over the genes of each expression
        bin (deviations of every control from its reference point;
        shrunk 10 % towards a multiple of the identity), so directions in
        which homogeneous controls already vary (sampling noise, depth) count
        less than directions they never reach.
    reference
        Where a homogeneous gene's vector is expected, and how far from it
        its vector wanders. ``"level"`` (default): pooled over the
        ``window`` genes nearest in ``level`` -- the mean of all their
        controls, and the median of their controls' mean squared distance
        to it. Every control is scored against the same reference (leave
        one out), so the null has ``n`` scores per gene. ``"gene"``: the
        gene's own controls ``1..n_null`` -- their mean and their spread --
        and each control ``j`` is scored against the other ``n_null``.
        Homogeneous controls of genes of the same level land alike: on the
        olfactory bulb, once the level was accounted for, two independent
        sets of a gene's controls agreed on where they sit no better than
        chance (r <= 0.06) and on how far they spread only a little, among
        the deepest genes (r 0.16-0.20). A gene's own few controls measured
        mainly their own noise, which went straight into its score
        (benchmarks/RESULTS.md).
    window
        Genes pooled by ``reference="level"`` (at most all genes).
    floor
        Lower bound of a gene's squared control spread, as a fraction of the
        median over its expression bin (applied alike to the real gene and
        to the controls' null scores). It keeps genes whose controls happen
        to be nearly identical (e.g. all-zero images of very sparse genes)
        from getting huge scores.
    tail
        Where fewer than 10 null scores of the bin exceed a gene's score,
        extrapolate the p-value with a generalised Pareto fit to the bin's
        upper null tail (Knijnenburg et al. 2009; shape clipped at 0, i.e. at
        most an exponential decay, so p never drops to 0) instead of stopping
        at ``1 / (N + 1)``.
    index
        Gene names for the output.

    Returns
    -------
    pandas.DataFrame
        ``score``, ``pval``, ``qval``, ``rank`` (1 = most spatially variable),
        ``bin``; sorted by rank.

    Examples
    --------
    >>> import numpy as np
    >>> from sigel.tasks.svg import svg_scores
    >>> rng = np.random.default_rng(0)
    >>> C = rng.normal(size=(200, 3, 4)); R = rng.normal(size=(200, 4))
    >>> R[:10] += 4  # ten "spatially variable" genes
    >>> tab = svg_scores(R, C, index=[f"g{i}" for i in range(200)], metric="euclidean")
    >>> int((tab["qval"] < 0.05).sum()) >= 8
    True
    """
    assert_one_of("metric", metric, METRICS)
    assert_one_of("reference", reference, REFERENCES)
    assert_positive("window", window)
    if not 0 <= floor <= 1:
        raise SigelInputError(f"`floor` must be in [0, 1]; got {floor!r}")
    R = np.asarray(real, dtype=np.float64)
    C = np.asarray(controls, dtype=np.float64)
    n_min = 1 if reference == "level" else 3
    if C.ndim != 3 or C.shape[0] != R.shape[0] or C.shape[2] != R.shape[1] or C.shape[1] < n_min:
        raise SigelInputError(
            f"controls must have shape (G, n >= {n_min}, D) matching real {R.shape} for reference={reference!r}; "
            f"got {C.shape}"
        )
    if reference == "level" and C.shape[0] * C.shape[1] < 2:
        raise SigelInputError("reference='level' needs at least 2 controls in all (more genes, or n_null >= 2)")
    if metric in ("cosine", "whitened"):
        R, C = _normalise(R), _normalise(C)
    G = C.shape[0]
    if level is None:
        bins = np.zeros(G, dtype=np.int64)
    else:
        level = np.asarray(level, dtype=np.float64)
        nb = int(max(1, min(n_bins, G // max(min_bin, 1))))
        ranks = pd.Series(level).rank(method="first").to_numpy() - 1
        bins = np.minimum((ranks * nb / G).astype(np.int64), nb - 1)
    if reference == "level":
        d2, d2_null, spread2, spread_null = _level_reference(R, C, level, bins, int(window),
                                                             whiten=metric == "whitened")
    else:
        d2, d2_null, spread2, spread_null = _gene_reference(R, C, bins, whiten=metric == "whitened")
    if floor > 0:
        low = np.zeros(G)
        for b in np.unique(bins):
            low[bins == b] = floor * np.median(spread2[bins == b])
        spread2 = np.maximum(spread2, low)
        spread_null = np.maximum(spread_null, low[:, None])
    score = np.sqrt(d2 / np.maximum(spread2, 1e-24))
    null = np.sqrt(d2_null / np.maximum(spread_null, 1e-24))

    pval = np.empty(G)
    for b in np.unique(bins):
        sel = bins == b
        pool = np.sort(null[sel].ravel())
        n_ge = pool.size - np.searchsorted(pool, score[sel], side="left")
        p = (1.0 + n_ge) / (1.0 + pool.size)
        if tail:
            far = n_ge < 10
            if far.any():
                p[far] = np.minimum(p[far], _gpd_tail(pool, score[sel][far]))
        pval[sel] = p
    out = pd.DataFrame({"score": score, "pval": pval, "qval": bh(pval), "bin": bins},
                       index=pd.Index(index if index is not None else np.arange(G), name="gene"))
    out["rank"] = out["score"].rank(ascending=False, method="first").astype(np.int64)
    return out.sort_values("rank")[["score", "pval", "qval", "rank", "bin"]]


def _gene_reference(R: np.ndarray, C: np.ndarray, bins: np.ndarray, whiten: bool):
    """``reference="gene"``: squared distances of the real gene to its controls ``1..n`` and of every control
    to the other ``n`` (leave one out), and the matching squared spreads."""
    if whiten:
        R, C = _whiten_per_bin(R, C, C.mean(1), bins, ddof=1)[:2]
    n = C.shape[1] - 1
    ref = C[:, 1:, :]
    m = ref.mean(1)
    spread2 = np.maximum((ref ** 2).sum(-1).mean(1) - (m ** 2).sum(-1), 0.0)
    d2 = ((R - m) ** 2).sum(-1)
    S = C.sum(1, keepdims=True)
    sq = (C ** 2).sum(-1)                                  # (G, n1)
    m_loo = (S - C) / n                                    # (G, n1, D)
    spread_loo = np.maximum((sq.sum(1, keepdims=True) - sq) / n - (m_loo ** 2).sum(-1), 0.0)
    d2_loo = ((C - m_loo) ** 2).sum(-1)                    # (G, n1)
    return d2, d2_loo, spread2, spread_loo


def _level_windows(level, G: int, window: int):
    """Start of each gene's window of ``window`` consecutive genes in level order (shifted, never clipped, at
    the ends) and the level order itself."""
    order = np.argsort(level, kind="stable") if level is not None else np.arange(G)
    pos = np.empty(G, dtype=np.int64)
    pos[order] = np.arange(G)
    return np.clip(pos - window // 2, 0, G - window), order


def _level_centre(C: np.ndarray, level, window: int):
    """Each gene's pooled reference point: the mean of all controls ``C`` (``(G, n, D)``) of the ``window``
    genes nearest in level (at most all genes). Returns it (``(G, D)``) with `_level_windows`' starts and
    level order."""
    G, n, D = C.shape
    w = int(min(window, G))
    start, order = _level_windows(level, G, w)
    csum = np.concatenate([np.zeros((1, D)), np.cumsum(C.sum(1)[order], axis=0)])
    return (csum[start + w] - csum[start]) / (w * n), start, order


def _level_reference(R: np.ndarray, C: np.ndarray, level, bins: np.ndarray, window: int, whiten: bool):
    """``reference="level"``: each gene's reference point is the mean of all controls of the ``window`` genes
    nearest in level; its squared spread the median, over those genes, of their controls' mean squared
    distance to their own reference points. Returns the real genes' squared distances, the controls' leave-one-
    out squared distances ``(G, n)`` and the squared spreads (``(G,)``, and ``(G, 1)`` for the null)."""
    G, n, _ = C.shape
    w = int(min(window, G))
    centre, start, order = _level_centre(C, level, w)                 # (G, D)
    N = w * n
    if whiten:
        R, C, centre = _whiten_per_bin(R, C, centre, bins)
    d2 = ((R - centre) ** 2).sum(-1)
    d2c = ((C - centre[:, None, :]) ** 2).sum(-1)                      # (G, n)
    # leave one out: C - (N centre - C) / (N - 1) = N / (N - 1) (C - centre)
    d2_null = d2c * (N / (N - 1.0)) ** 2 if N > 1 else d2c
    own = d2c.mean(1)[order]
    windows = np.lib.stride_tricks.sliding_window_view(own, w)        # (G - w + 1, w), a view
    spread2 = np.median(windows, axis=1)[start]
    return d2, d2_null, spread2, spread2[:, None]


def _whiten_per_bin(R: np.ndarray, C: np.ndarray, centre: np.ndarray, bins: np.ndarray, shrink: float = 0.1,
                    ddof: int = 0):
    """Map real and control vectors (and ``centre``) of each bin by the inverse square root of the bin's control
    covariance.

    The covariance is that of every control around its gene's reference point ``centre`` (its own
    controls' mean, or the pooled one), pooled over the bin (it never sees the real genes, so a real gene
    and its controls stay exchangeable under the null), with ``ddof`` degrees of freedom per gene spent on
    ``centre`` (1 for a gene's own mean); shrunk by ``shrink`` towards ``trace / D`` times the identity.
    """
    R, C, centre = R.copy(), C.copy(), centre.copy()
    D = R.shape[1]
    for b in np.unique(bins):
        sel = bins == b
        dev = C[sel] - centre[sel][:, None, :]
        n_g, n1 = dev.shape[:2]
        cov = np.einsum("gid,gie->de", dev, dev) / max(n_g * (n1 - ddof), 1)
        cov = (1.0 - shrink) * cov + shrink * np.trace(cov) / D * np.eye(D)
        w, V = np.linalg.eigh(cov)
        W = V @ np.diag(1.0 / np.sqrt(np.maximum(w, 1e-12 * max(w.max(), 1e-300)))) @ V.T
        R[sel] = R[sel] @ W
        C[sel] = C[sel] @ W
        centre[sel] = centre[sel] @ W
    return R, C, centre


def _gpd_tail(pool: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(null > x) from a generalised Pareto fit to the upper tail of the sorted null ``pool``."""
    from scipy import stats

    N = pool.size
    n_exc = int(min(250, max(N // 10, 0)))
    if n_exc < 30:
        return np.full(x.shape, 1.0)
    t = 0.5 * (pool[N - n_exc - 1] + pool[N - n_exc])
    exc = pool[N - n_exc:] - t
    try:
        c, _, scale = stats.genpareto.fit(exc, floc=0.0)
    except Exception:  # pragma: no cover - degenerate tails
        return np.full(x.shape, 1.0)
    if not (np.isfinite(c) and np.isfinite(scale) and scale > 0):
        return np.full(x.shape, 1.0)
    if c < 0:  # a bounded tail would give p = 0 beyond its end point: use the exponential tail instead
        c, scale = 0.0, float(exc.mean())
    return np.clip(n_exc / N * stats.genpareto.sf(np.maximum(x - t, 0.0), c, loc=0.0, scale=scale), 1e-300, 1.0)


# ====================================================================== wrapper
def svg(
    model,
    adata,
    *,
    genes=None,
    n_null: int = 2,
    n_bins: int = 10,
    metric: str = "cosine",
    reference: str = "level",
    null: str = "zinb",
    variance: str = "local",
    depth_aware: bool = True,
    draws: int | str | None = "depth",
    batch_genes: int = 256,
    image_options: dict | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
    key_added: str = _keys.SVG,
) -> pd.DataFrame:
    """Spatially variable genes against simulated spatially homogeneous controls.

    For every gene, ``n_null`` spatially homogeneous controls are drawn
    from the gene's own marginal shuffled over the tissue (its values
    permuted, `sigel.sim.permuted`, or a fitted zero-inflated negative
    binomial, `sigel.sim.homogeneous`), turned into images exactly as the real genes
    were (same grid, library sizes of the real genes, same scaling) and
    embedded with the trained encoder in batches. Score = distance of the
    gene's vector from the mean of the controls of the genes nearest in
    expression level, over their typical spread; p-values
    from the leave-one-out control scores pooled over genes of similar mean
    count (`svg_scores`); BH q-values.

    Parameters
    ----------
    model
        A trained `sigel.SIGEL`. On the olfactory bulb (260 legacy-ST
        spots) a lighter input blur (``smooth_sigma=1``) no longer helps with
        the default model (AUPRC 0.53 / 0.48 against 0.55 / 0.57, two
        refits): keep the default. On such small tissues sigel's ranking
        trails Moran's I (`tl.morans_i`, 0.755 there); on three Visium
        sections it found SpatialDE's calls as well as Moran's I or better,
        though less well among SpatialDE's strongest genes
        (benchmarks/RESULTS.md).
    adata
        The AnnData the model was trained on (same spots; counts as at fit).
    genes
        Genes to test (default: every gene the model embedded that is in ``adata``).
        With ``reference="level"`` the genes tested together lend each other
        their controls, so test all of them in one call (a few hundred genes
        or more). Scores change somewhat with the set a gene is tested in (its
        draws and controls differ), less than with ``"gene"``: on the
        olfactory bulb a random 2,000-gene subset ranked its genes as the
        full run did at Spearman 0.90 (``"gene"``: 0.72).
    n_null
        Controls simulated per gene (``reference="gene"``: ``n_null + 1``,
        at least 3). With the pooled ``"level"`` reference a gene's score
        rests on the controls of 101 genes, so few per gene suffice: on the
        olfactory bulb 1, 2 and 4 per gene found the published SpatialDE
        genes equally well (benchmarks/RESULTS.md); more give the p-values a
        larger null to be read from.
    n_bins
        Expression bins for pooling null scores.
    metric
        ``"cosine"`` (default), ``"euclidean"`` or ``"whitened"`` distances
        between vectors (see `svg_scores`).
    reference
        What a gene's vector is compared with: ``"level"`` (default), the
        controls of the 101 genes nearest in expression level, pooled --
        where a homogeneous gene of that level lands, and how far it wanders
        -- or ``"gene"``, the gene's own ``n_null`` controls, which measure
        mostly their own noise (see `svg_scores`).
    null
        How controls are drawn: ``"zinb"`` (default; `sigel.sim.homogeneous`:
        a zero-inflated negative binomial fitted to the gene by moments, its
        mean proportional to each spot's size factor, so a control's counts
        follow sequencing depth the way a gene whose *rate* is the same
        everywhere does) or ``"permutation"`` (`sigel.sim.permuted`: the
        gene's own values shuffled over the spots, depth-adjusted -- its exact
        marginal). Where depth is itself spatial (it is, in most tissues) only
        the first matches the null: on 300 depth-homogeneous genes planted in
        the mouse olfactory bulb the permutation null called 10 % at p < 0.05,
        the ZINB null 4-5 % (DLPFC 151673: 2-3 % and 3 %; a synthetic tissue
        with a 5-fold depth gradient: 15 % and 4 %; benchmarks/RESULTS.md).
    variance
        The variance the ZINB null is fitted to (``null="zinb"`` only):
        ``"local"`` (default) -- the variance between each spot and the mean
        of its 6 nearest neighbours, scaled to what it would be for
        independent spots (`sigel.sim.nulls.local_variance`): the gene's
        spot-to-spot noise without its pattern -- or ``"marginal"`` -- the
        gene's variance over all spots, which for a patterned gene includes
        the pattern itself, so its controls are as spread as its pattern and
        its score is compressed. The zero-inflation is fitted to the observed
        zero fraction either way; for a homogeneous gene both agree. On the
        olfactory bulb ``"local"`` raised the AUPRC against the published
        SpatialDE calls from 0.15-0.18 to 0.19-0.20 (two refits) with the
        depth-homogeneous null genes of three sections still at 4-6 % at
        p < 0.05 (benchmarks/RESULTS.md).
    depth_aware
        Controls keep each spot's library size (default): a value moved from
        spot ``t`` to ``s`` is rescaled by ``sf_s / sf_t`` (permutation), or
        drawn as ``ZINB(pi, sf_s mu, theta)``; after library-size
        normalisation they are flat, like a real gene whose counts only follow
        sequencing depth. ``False``: a pure shuffle of the raw counts (controls
        then carry the inverse of the library-size map after normalisation,
        which inflates the scores of every gene when depth varies).
    draws
        For a model that reads depth-matched draws (the default
        ``rarefy='auto'``): how many draws are averaged into each gene's and
        each control's vector. ``'depth'`` (default): as many as each one's
        counts hold -- a gene ``k`` times deeper than the common depth is read
        ``k`` times, at least the model's ``rarefy_draws`` (4) and at most 8
        times that (`sigel.SIGEL.embed_images`) -- so that the counts of deep
        genes, where most spatial signal is, are used rather than thinned
        away. A whole number reads every deep gene that many times; ``None``
        reads ``rarefy_draws``. On the olfactory bulb (two refits, against
        the published SpatialDE calls; the default reference and 2 controls)
        the AUPRC was 0.56 / 0.40 with at most 16 reads and 0.60 / 0.44 with
        at most 32 (the default); Moran's I is 0.755 there.
        The score reads small differences that each draw's sampling noise
        hides, and a gene thinned to the common depth keeps only part of
        its counts (Moran's I itself falls from 0.72 to 0.23 on the bulb
        when read from one such draw per gene). Ignored by a model that
        reads whole images (benchmarks/RESULTS.md).
    batch_genes
        Genes whose controls are simulated, imaged and embedded together.
    image_options
        Overrides of the model's image options (`sigel.GeneImages.from_anndata`
        arguments, e.g. ``library_size_key``) for reading ``adata``.
    seed
        Random seed for the controls.
    progress
        Progress bar over gene batches (``None``: ``sigel.settings``).
    key_added
        Prefix of the columns written to ``adata.var``.

    Returns
    -------
    pandas.DataFrame
        Index gene; ``score``, ``pval``, ``qval``, ``rank`` (1 = most
        spatially variable), ``bin`` (expression bin), ``mean`` (mean count);
        sorted by rank. Also written to ``adata.var['<key_added>_score' |
        '_pval' | '_qval' | '_rank']`` (NaN for untested genes) and
        ``adata.uns[key_added]`` (parameters).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(100, seed=0)
    >>> model = sigel.SIGEL(epochs=2, embed_dim=8).fit(ad)   # doctest: +SKIP
    >>> tab = sigel.tl.svg(model, ad, n_null=10)              # doctest: +SKIP
    >>> tab.columns.tolist()                                 # doctest: +SKIP
    ['score', 'pval', 'qval', 'rank', 'bin', 'mean']
    """

    check_model(model, "svg")
    assert_one_of("reference", reference, REFERENCES)
    assert_positive("n_null", n_null)
    if reference == "gene" and n_null < 2:
        raise SigelInputError(f"`n_null` must be >= 2 with reference='gene'; got {n_null}")
    assert_positive("n_bins", n_bins)
    assert_positive("batch_genes", batch_genes)
    assert_one_of("metric", metric, METRICS)
    assert_one_of("null", null, ("zinb", "permutation"))
    assert_one_of("variance", variance, VARIANCES)
    draws = model.draws_per_gene(draws)  # validated; recorded in the parameters as used
    t0 = time.perf_counter()
    n1 = int(n_null) + (reference == "gene")  # 'gene': n_null references and one more control for the null
    genes, real, controls, mean_count = embed_with_controls(
        model, adata, genes, n1, draws=draws, null=null, depth_aware=depth_aware, variance=variance,
        batch_genes=batch_genes, image_options=image_options, seed=seed, progress=progress)
    G = len(genes)
    level = np.log1p(mean_count)
    tab = svg_scores(real, controls, level, n_bins=n_bins, metric=metric, reference=reference, index=genes)
    tab["mean"] = pd.Series(mean_count, index=genes).reindex(tab.index).to_numpy()
    secs = time.perf_counter() - t0
    _write(adata, tab, key_added, dict(n_null=int(n_null), n_bins=int(n_bins), metric=metric, reference=reference,
                                       null=null,
                                       variance=variance, depth_aware=bool(depth_aware), draws=draws, seed=seed,
                                       seconds=secs))
    logger.info("svg: %d genes, %d at q < 0.05, %.1f s", G, int((tab["qval"] < 0.05).sum()), secs)
    return tab


def embed_with_controls(model, adata, genes, n_controls: int, *, draws="depth", null: str = "zinb",
                        depth_aware: bool = True, variance: str = "local", batch_genes: int = 256,
                        image_options: dict | None = None, seed: int | None = 0, progress: bool | None = None):
    """The real genes' vectors and those of ``n_controls`` homogeneous controls per gene, as `svg` reads them.

    Returns
    -------
    tuple
        ``(genes, real (G, D), controls (G, n_controls, D), mean_count (G,))``; ``genes`` are those the
        model's image filters keep, in order.
    """
    from tqdm.auto import tqdm

    opts = model_image_options(model, image_options, adata)
    if genes is None:
        genes = model.embeddings_.index.intersection(adata.var_names, sort=False)
    genes = pd.Index([str(g) for g in np.atleast_1d(genes)])
    if len(genes) == 0:
        raise SigelInputError("no genes to test: none of the model's genes is in adata.var_names")
    images = real_images(model, adata, genes, opts)
    genes = images.genes
    real = model.embed_images(images, draws=draws)
    draw = _ControlDraws(adata, genes, opts, null=null, depth_aware=depth_aware, seed=seed, variance=variance)
    G = len(genes)
    controls = np.empty((G, int(n_controls), real.shape[1]), dtype=np.float32)
    for s in tqdm(range(0, G, int(batch_genes)), disable=not settings.show_progress(progress), desc="svg controls"):
        e = min(s + int(batch_genes), G)
        pim = draw.images(s, e, int(n_controls))
        same_grid(pim, images)
        controls[s:e] = model.embed_images(pim, draws=draws).reshape(e - s, int(n_controls), -1)
    return genes, real, controls, draw.mean_count


class _ControlDraws:
    """Spatially homogeneous controls of a list of genes, imaged like the model's images.

    ``null='permutation'``: each gene's values shuffled over the spots
    (depth-adjusted when ``depth_aware``); ``'zinb'``: draws from the
    gene's zero-inflated negative binomial with mean proportional to each
    spot's size factor, fitted to the gene's marginal variance or, with
    ``variance='local'``, to its spot-to-neighbours variance
    (`sigel.sim.nulls.local_variance`). One random stream (``seed``) for all draws, gene
    blocks in order.
    """

    def __init__(self, adata, genes, opts: dict, *, null: str, depth_aware: bool, seed, variance: str = "local"):
        from ..sim.images import real_library_size
        from ..sim.nulls import fit_zinb

        self.adata, self.opts, self.null, self.depth_aware = adata, opts, null, depth_aware
        X = tissue.counts(adata, opts.get("layer"))[:, tissue.gene_indices(adata, genes)]
        self.lib = real_library_size(adata, opts)
        self.sf = self.lib / self.lib.mean() if depth_aware else np.ones(adata.n_obs)
        self.X = sp.csc_matrix(X, dtype=np.float64)
        graph = None
        if null == "zinb" and variance == "local":
            graph = tissue.neighbor_graph(adata, 6, spatial_key=opts.get("spatial_key", tissue.DEFAULT_SPATIAL_KEY))[0]
        self.params = fit_zinb(self.X, size_factors=self.sf, graph=graph) if null == "zinb" else None
        self.mean_count = np.asarray(self.X.mean(axis=0)).ravel()
        self.rng = np.random.default_rng(seed)

    def images(self, start: int, end: int, n_draws: int):
        """`GeneImages` of ``n_draws`` controls of genes ``start..end`` (gene-major order)."""
        from ..sim.images import pseudo_images
        from ..sim.nulls import draw_permuted, draw_zinb

        if self.null == "zinb":
            Y = draw_zinb(self.rng, self.params.iloc[start:end], self.sf, n_draws)
        else:
            Y = draw_permuted(self.rng, self.X[:, start:end].toarray(), self.sf if self.depth_aware else None,
                               n_draws)
        names = [f"__ctrl{i}" for i in range(Y.shape[1])]
        return pseudo_images(self.adata, Y, names, {**self.opts}, library_size=self.lib)


def control_images(model, adata, genes, *, null: str = "zinb", depth_aware: bool = True, seed: int | None = 0,
                   image_options: dict | None = None, variance: str = "local"):
    """One spatially homogeneous control per gene, imaged like the model's images (for figures).

    The same draws as `svg` makes (``null``, ``variance``, ``depth_aware``); images are
    named ``<gene> (control)``.

    Returns
    -------
    sigel.GeneImages
    """
    assert_one_of("null", null, ("zinb", "permutation"))
    assert_one_of("variance", variance, VARIANCES)
    opts = model_image_options(model, image_options, adata)
    genes = pd.Index([str(g) for g in np.atleast_1d(genes)])
    draw = _ControlDraws(adata, genes, opts, null=null, depth_aware=depth_aware, seed=seed, variance=variance)
    import dataclasses

    pim = draw.images(0, len(genes), 1)
    return dataclasses.replace(pim, genes=pd.Index([f"{g} (control)" for g in genes]))


def _write(adata, tab, key_added, params):
    for col in ("score", "pval", "qval", "rank"):
        _keys.store(adata, "var", f"{key_added}_{col}", tab[col].reindex(adata.var_names).to_numpy())
    _keys.store(adata, "uns", key_added, {"params": params})


# ====================================================================== Moran's I
_knn_weights = tissue.knn_weights


def morans_i(adata, *, genes=None, layer=None, spatial_key: str = "spatial", n_neighbors: int = 6,
             library_size_key: str | None = None, batch_genes: int | None = None,
             counts: bool = True) -> pd.DataFrame:
    """Moran's I of every gene on the spot kNN graph, ranked (the statistic of `sigel.tissue.morans_i`).

    Values are library-size normalised (to the median library size) and
    ``log1p``-transformed; the spatial weights are the ``n_neighbors``
    nearest spots of each spot, row-standardised (a graph stored by
    `sigel.tissue.spatial_neighbors` is reused when it matches). The p-value
    uses the normal approximation with the variance under the
    randomisation assumption (``E[I] = -1/(n-1)``, Cliff & Ord 1981; it
    includes each gene's kurtosis), one-sided for positive autocorrelation.
    Memory is linear in the number of spots (sparse throughout).

    Parameters
    ----------
    adata
        AnnData with counts (finite, non-negative; at least 4 spots) and
        coordinates (lookup rule of `sigel.tissue.coordinates`:
        ``obsm[spatial_key]``, else ``obs['x','y']``, else the Visium array
        coordinates). Never modified.
    genes
        Genes to score (default all).
    layer
        Counts layer (default ``X``).
    spatial_key
        Coordinates key.
    n_neighbors
        k of the kNN graph (6 suits hexagonal Visium spots).
    library_size_key
        ``obs`` column with library sizes (default: row sums over all genes).
    batch_genes
        Ignored (kept for compatibility: the computation is sparse).
    counts
        Require raw (whole-number) counts (default): normalised values would
        be normalised again; ``False`` uses the values as they are.

    Returns
    -------
    pandas.DataFrame
        Index gene; ``I``, ``z``, ``pval``, ``qval``, ``rank``; sorted by rank.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(40, seed=0)
    >>> tab = sigel.tl.morans_i(ad)
    >>> tab.columns.tolist()
    ['I', 'z', 'pval', 'qval', 'rank']
    """
    out = tissue.morans_i(adata, genes, layer=layer, spatial_key=spatial_key, library_size_key=library_size_key,
                          n_neighbors=n_neighbors, counts=counts)
    out["rank"] = out["I"].rank(ascending=False, method="first", na_option="bottom").astype(np.int64)
    return out.sort_values("rank")


# ====================================================================== comparison
def compare_svg(
    model,
    adata,
    *,
    genes=None,
    n_null: int = 2,
    reference: str = "level",
    null: str = "zinb",
    variance: str = "local",
    draws: int | str | None = "depth",
    top_k=(50, 100),
    sparkx: bool = True,
    n_neighbors: int = 6,
    image_options: dict | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
    key_added: str = "sigel_compare_svg",
) -> pd.DataFrame:
    """Compare sigel's SVG ranking with a SPARK-X-style test and Moran's I on the same genes.

    Parameters
    ----------
    model
        A trained `sigel.SIGEL`.
    adata
        The AnnData the model was trained on.
    genes
        Genes to compare (default: the model's genes present in ``adata``).
    n_null, reference, null, variance, draws
        Controls per gene, what a gene is compared with, how the
        controls are drawn and how many depth-matched draws are averaged per
        vector, for `svg`.
    top_k
        Sizes of the top lists whose overlaps are reported.
    sparkx
        Run the SPARK-X-style test (R package ``sigel`` through rpy2).
    n_neighbors
        kNN graph of Moran's I.
    image_options
        Overrides of the model's image options (see `svg`).
    seed, progress
        Passed to `svg`.
    key_added
        ``adata.uns`` key for the comparison.

    Returns
    -------
    pandas.DataFrame
        Index gene; ``sigel_score``, ``sigel_pval``, ``sigel_qval``,
        ``sigel_rank``, ``sparkx_stat`` (-log10 combined p), ``sparkx_pval``,
        ``sparkx_qval``, ``sparkx_rank``, ``moran_I``, ``moran_pval``,
        ``moran_qval``, ``moran_rank``; sorted by ``sigel_rank``.
        ``.attrs`` holds ``spearman`` (``{method: {method: rho}}``, Spearman
        correlations of the rankings), ``overlap`` (records ``k``,
        ``method_a``, ``method_b``, ``overlap``, ``fraction``: top-k overlaps)
        and ``seconds`` (run time per method); `rank_agreement` rebuilds them
        as DataFrames. ``adata.uns[key_added]`` stores the table, ``spearman``
        and ``overlap`` as DataFrames, and ``seconds``.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(100, seed=0)
    >>> model = sigel.SIGEL(epochs=2, embed_dim=8).fit(ad)   # doctest: +SKIP
    >>> cmp = sigel.tl.compare_svg(model, ad)                # doctest: +SKIP
    >>> cmp.attrs["spearman"]["sigel"]["moran"]              # doctest: +SKIP
    """
    check_model(model, "compare_svg")
    opts = model_image_options(model, image_options, adata)
    secs = {}
    t = time.perf_counter()
    s = svg(model, adata, genes=genes, n_null=n_null, reference=reference, null=null, variance=variance, draws=draws,
            image_options=image_options, seed=seed, progress=progress)
    secs["sigel"] = time.perf_counter() - t
    genes = s.index
    out = s[["score", "pval", "qval", "rank"]].add_prefix("sigel_")
    layer = opts.get("layer")
    lib_key = opts.get("library_size_key")
    if sparkx:
        from .._rbridge import sparkx_r

        t = time.perf_counter()
        X = tissue.counts(adata, layer)[:, tissue.gene_indices(adata, genes)]
        sx = sparkx_r(X, tissue.coordinates(adata, opts.get("spatial_key", "spatial")), genes=genes)
        secs["sparkx"] = time.perf_counter() - t
        sx = sx.reindex(genes)
        out["sparkx_stat"] = -np.log10(np.clip(sx["pval"].to_numpy(), 1e-300, None))
        out["sparkx_pval"] = sx["pval"].to_numpy()
        out["sparkx_qval"] = sx["qval"].to_numpy()
        out["sparkx_rank"] = pd.Series(out["sparkx_pval"]).rank(method="first").astype(np.int64).to_numpy()
    t = time.perf_counter()
    mi = morans_i(adata, genes=genes, layer=layer, spatial_key=opts.get("spatial_key", "spatial"),
                  n_neighbors=n_neighbors, library_size_key=lib_key,
                  counts=bool(opts.get("counts", True))).reindex(genes)
    secs["moran"] = time.perf_counter() - t
    out["moran_I"] = mi["I"].to_numpy()
    out["moran_pval"] = mi["pval"].to_numpy()
    out["moran_qval"] = mi["qval"].to_numpy()
    out["moran_rank"] = mi["I"].rank(ascending=False, method="first").astype(np.int64).to_numpy()
    spearman, overlap = rank_agreement(out, top_k=top_k)
    out = out.sort_values("sigel_rank")
    # plain Python values only in attrs (pandas compares attrs when concatenating)
    out.attrs["spearman"] = {a: {b: float(v) for b, v in row.items()} for a, row in spearman.iterrows()}
    out.attrs["overlap"] = overlap.to_dict("records")
    out.attrs["seconds"] = {k: float(v) for k, v in secs.items()}
    _keys.store(adata, "uns", key_added, {"table": out.copy(), "spearman": spearman, "overlap": overlap,
                                          "seconds": secs})
    return out


def rank_agreement(table: pd.DataFrame, *, top_k=(50, 100)):
    """Pairwise Spearman correlations of the ``*_rank`` columns and their top-k overlaps.

    Parameters
    ----------
    table
        A frame with columns ``<method>_rank``.
    top_k
        List sizes.

    Returns
    -------
    spearman : pandas.DataFrame
        Methods x methods.
    overlap : pandas.DataFrame
        Columns ``k``, ``method_a``, ``method_b``, ``overlap`` (count),
        ``fraction`` (count / k).

    Examples
    --------
    >>> import pandas as pd
    >>> from sigel.tasks.svg import rank_agreement
    >>> t = pd.DataFrame({"a_rank": [1, 2, 3, 4], "b_rank": [2, 1, 3, 4]})
    >>> rho, ov = rank_agreement(t, top_k=(2,))
    >>> float(ov["fraction"].iloc[0])
    1.0
    """
    cols = [c for c in table.columns if c.endswith("_rank")]
    methods = [c[: -len("_rank")] for c in cols]
    R = table[cols].copy()
    R.columns = methods
    spearman = R.rank().corr(method="pearson")
    rows = []
    for k in np.atleast_1d(top_k):
        k = int(min(k, len(table)))
        tops = {m: set(R.index[R[m].to_numpy() <= k]) for m in methods}
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                ov = len(tops[a] & tops[b])
                rows.append(dict(k=k, method_a=a, method_b=b, overlap=ov, fraction=ov / max(k, 1)))
    return spearman, pd.DataFrame(rows)
