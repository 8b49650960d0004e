"""Better spatial domains: prune redundant genes with the embedding, then SpaGCN.

Many genes paint the same spatial pattern. Clustering spots on all of them
lets a large family of near-duplicates (or thousands of pattern-free genes)
dominate the principal components. :func:`prune_genes` groups genes by their
SIGEL embedding (the model's contexts, or a cosine-similarity threshold),
keeps the most spatially variable member(s) of each group and drops groups
without spatial signal; :func:`spatial_domains` runs SpaGCN on the lean gene
set and :func:`domain_scores` compares labels with a ground truth (ARI/NMI).

Choices that are ours (the paper leaves room): the spatial score defaults to
sigel's SVG score when that task is importable, else a Moran's I computed for
all genes at once on a kNN spot graph (analytic normal-approximation p-values,
Benjamini-Hochberg q-values); a group "has spatial signal" when at least one
member passes ``alpha``; SpaGCN's resolution search and its neighbourhood
refinement are re-implemented (same algorithm) so that they work with fewer
than 50 genes and at scale.
"""
from __future__ import annotations

import contextlib
import io
import math
import random
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys, tissue
from .._settings import logger, settings
from .._validate import (
    SigelInputError,
    assert_in_range,
    assert_key_in,
    assert_one_of,
    assert_positive,
    assert_unique_names,
)
from ._model import setup_options

__all__ = ["prune_genes", "spatial_domains", "domain_scores", "morans_i_table"]

PRUNED = "sigel_pruned"  # adata.var[...] (bool), '_group', '_score'; adata.uns[...]
_GROUP_BY = ("contexts", "threshold")
_LINKAGES = ("single", "average", "complete")
_SCORES = ("auto", "svg", "morans_i")


# =============================================================== shared helpers
def _is_anndata(x) -> bool:
    return hasattr(x, "obs") and hasattr(x, "var") and hasattr(x, "obs_names")


_log_normalized = tissue.log_normalize
_coordinates = tissue.coordinates
_knn_weights = tissue.knn_weights


def _geometry(adata, spatial_key, geometry):
    assert_one_of("geometry", geometry, ("auto", "visium", "grid", "free"))
    if geometry != "auto":
        return geometry
    from ..data.images import detect_geometry

    try:
        return detect_geometry(adata, spatial_key)
    except SigelInputError:
        return "free"


# ================================================================= Moran's I
def _morans_i_core(X: sp.spmatrix, W: sp.spmatrix):
    """``(I, z, pval)`` arrays of :func:`sigel.tissue.morans_i_values` for weights ``W``."""
    t = tissue.morans_i_values(X, W)
    return t["I"].to_numpy(), t["z"].to_numpy(), t["pval"].to_numpy()


def morans_i_table(
    adata,
    genes=None,
    *,
    layer: str | None = None,
    spatial_key: str = "spatial",
    library_size_key: str | None = None,
    n_neighbors: int = 6,
    counts: bool = True,
) -> pd.DataFrame:
    """Moran's I of every gene (`sigel.tissue.morans_i`) as a gene score table for :func:`prune_genes`.

    Parameters
    ----------
    adata
        Spots x genes AnnData with raw counts.
    genes
        Genes to score (default: all).
    layer
        Layer with counts (default ``X``).
    spatial_key
        ``adata.obsm`` key of the coordinates (lookup rule of
        `sigel.tissue.coordinates`).
    library_size_key
        ``adata.obs`` column with library sizes (default: totals of ``X``).
    n_neighbors
        Neighbours per spot in the spatial graph (6 suits Visium's hexagons).
    counts
        Require raw (whole-number) counts (default); ``False`` uses the
        values as they are.

    Returns
    -------
    pandas.DataFrame
        Indexed by gene, sorted by decreasing ``score`` (Moran's I), with
        ``zscore``, ``pval`` (one-sided, randomisation assumption) and ``qval``
        (Benjamini-Hochberg).

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(40, shape=(15, 15))
    >>> from sigel.tasks.domains import morans_i_table
    >>> morans_i_table(adata).head(3).columns.tolist()
    ['score', 'zscore', 'pval', 'qval']
    """
    t = tissue.morans_i(adata, genes, layer=layer, spatial_key=spatial_key, library_size_key=library_size_key,
                        n_neighbors=n_neighbors, counts=counts)
    tab = t.rename(columns={"I": "score", "z": "zscore"})[["score", "zscore", "pval", "qval"]]
    tab = tab.sort_values("score", ascending=False, na_position="last")
    tab.attrs["method"] = "morans_i"
    return tab


# ============================================================== gene grouping
def _unit_rows(E: np.ndarray) -> np.ndarray:
    nrm = np.linalg.norm(E, axis=1, keepdims=True)
    return E / np.maximum(nrm, 1e-12)


def _threshold_groups(E: np.ndarray, threshold: float, linkage: str, *, center: bool = True,
                      max_dense: int = 6000) -> np.ndarray:
    """Cluster genes whose embeddings have cosine similarity >= ``threshold``.

    With ``center``, the mean gene vector is removed first (a component all
    genes share would otherwise push every similarity towards 1).

    ``'single'``: connected components of the sparse graph of pairs above the
    threshold. ``'average'``/``'complete'``: agglomerative clustering cut at
    cosine distance ``1 - threshold`` (restricted to a 30-NN connectivity
    graph above ``max_dense`` genes so memory stays linear).
    """
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    E = np.asarray(E, dtype=np.float64)
    if center:
        E = E - E.mean(axis=0, keepdims=True)
    U = _unit_rows(E)
    G = U.shape[0]
    if G == 1:
        return np.zeros(1, dtype=np.int64)
    if linkage == "single":
        radius = math.sqrt(max(2.0 - 2.0 * threshold, 0.0))
        A = NearestNeighbors(radius=radius + 1e-9).fit(U).radius_neighbors_graph(U, mode="connectivity")
        _, lab = connected_components(A, directed=False)
        return lab.astype(np.int64)
    from sklearn.cluster import AgglomerativeClustering

    conn = None
    if G > max_dense:
        from sklearn.neighbors import kneighbors_graph

        conn = kneighbors_graph(U, n_neighbors=min(30, G - 1), include_self=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = AgglomerativeClustering(n_clusters=None, distance_threshold=1.0 - threshold, metric="cosine",
                                      linkage=linkage, connectivity=conn).fit_predict(U)
    return lab.astype(np.int64)


def _model_tables(model):
    """(embeddings DataFrame, hard contexts Series or None) from a SIGEL model or a DataFrame."""
    if isinstance(model, pd.DataFrame):
        return model, None
    emb = getattr(model, "embeddings_", None)
    if emb is None or (hasattr(model, "is_trained") and not model.is_trained):
        raise SigelInputError(
            "`model` has no embeddings; fit it first with sigel.SIGEL(...).fit(adata) "
            "(or pass a genes x D embedding DataFrame)"
        )
    ctx = getattr(model, "contexts_", None)
    ctx = None if ctx is None else ctx["context"]
    return emb, ctx


def _resolve_scores(score, adata, model, genes, *, layer, spatial_key, library_size_key, n_neighbors, seed,
                    counts=True):
    """A DataFrame (index gene) with column 'score' and, when known, 'qval'."""
    if isinstance(score, pd.Series):
        tab = score.rename("score").to_frame()
    elif isinstance(score, pd.DataFrame):
        assert_key_in("column", "score", score.columns, "the `score` table's columns")
        tab = score
    elif callable(score):
        out = score(adata, genes)
        tab = out.rename("score").to_frame() if isinstance(out, pd.Series) else out
    else:
        assert_one_of("score", score, _SCORES)
        tab = None
        if score == "svg" and isinstance(model, pd.DataFrame):
            raise SigelInputError("score='svg' needs a fitted sigel.SIGEL model, not an embedding table")
        if score in ("auto", "svg") and not isinstance(model, pd.DataFrame):
            svg = None
            try:
                from . import svg as _svg_mod

                svg = getattr(_svg_mod, "svg", None)
            except ImportError:
                if score == "svg":
                    raise SigelInputError("score='svg' but the SVG task (sigel.tl.svg) is not available") from None
            if svg is not None:
                tab = svg(model, adata, genes=genes, seed=seed)
                if not isinstance(tab, pd.DataFrame) or "score" not in tab:
                    raise SigelInputError("sigel.tl.svg did not return a table with a 'score' column")
                tab.attrs["method"] = "svg"
            elif score == "svg":
                raise SigelInputError("score='svg' but sigel.tl.svg is not available")
        if tab is None:
            tab = morans_i_table(adata, genes, layer=layer, spatial_key=spatial_key,
                                 library_size_key=library_size_key, n_neighbors=n_neighbors, counts=counts)
            tab.attrs["method"] = "morans_i"
    tab = tab.copy()
    tab.index = tab.index.astype(str)
    return tab


# ================================================================ prune_genes
def _is_fraction(keep) -> bool:
    """True when ``keep`` is a fraction of each group (a non-integral float), False for a count."""
    return isinstance(keep, (float, np.floating)) and not float(keep).is_integer()


def _check_prune_inputs(model, adata, keep, alpha, drop):
    """Validate `prune_genes`' inputs; return ``(model, adata)`` (also when given as ``(adata, model)``)."""
    if _is_anndata(model) and not _is_anndata(adata):  # tolerate (adata, model)
        model, adata = adata, model
    if not _is_anndata(adata):
        raise SigelInputError(f"`adata` must be an AnnData; got {type(adata).__name__}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise SigelInputError(f"`keep` must be a fraction in (0, 1] or an integer >= 1; got {keep!r}")
    if _is_fraction(keep):
        assert_in_range("keep", float(keep), 1e-12, 1.0)
    else:
        assert_positive("keep", keep)
    if alpha is not None:
        assert_in_range("alpha", alpha, 0.0, 1.0)
    assert_one_of("drop", drop, ("groups", "genes"))
    return model, adata


def _fit_defaults(model, adata, layer, library_size_key):
    """``layer`` and ``library_size_key`` defaulting to those the model was fitted with, when ``adata`` has them."""
    fit_params = getattr(model, "fit_params_", None) or {}
    if layer is None and fit_params.get("layer") is not None and fit_params["layer"] in adata.layers:
        layer = fit_params["layer"]
    if library_size_key is None and fit_params.get("library_size_key") in adata.obs:
        library_size_key = fit_params["library_size_key"]
    return layer, library_size_key


def _embedded_genes(emb: pd.DataFrame, adata) -> tuple[pd.Index, pd.Index]:
    """(all embedded gene names, the embedded genes that are in ``adata``)."""
    emb_genes = pd.Index(emb.index.astype(str))
    genes = emb_genes.intersection(pd.Index(adata.var_names.astype(str)), sort=False)
    if len(genes) == 0:
        raise SigelInputError("no gene of the model's embeddings is in adata.var_names")
    if len(genes) < len(emb_genes):
        logger.info(f"{len(emb_genes) - len(genes)} embedded genes are not in adata; ignored")
    return emb_genes, genes


def _gene_groups(group_by, genes: pd.Index, emb: pd.DataFrame, emb_genes: pd.Index, ctx, *, threshold, linkage,
                 center) -> tuple[pd.Series, str]:
    """Group of every gene (given, the model's contexts or a cosine threshold) and how it was obtained."""
    if isinstance(group_by, pd.Series):
        grp = group_by.copy()
        grp.index = grp.index.astype(str)
        grp = grp.reindex(genes)
        if grp.isna().any():
            raise SigelInputError(f"`group_by` has no group for {int(grp.isna().sum())} genes, "
                                  f"e.g. {list(grp.index[grp.isna()][:5])}")
        return grp, "given"
    assert_one_of("group_by", group_by, _GROUP_BY)
    if group_by == "contexts":
        if ctx is None:
            raise SigelInputError("group_by='contexts' needs a fitted sigel.SIGEL model (with contexts_); "
                                  "use group_by='threshold' for a plain embedding table")
        c = ctx.copy()
        c.index = c.index.astype(str)
        return c.reindex(genes).astype(np.int64), group_by
    assert_in_range("threshold", threshold, -1.0, 1.0)
    assert_one_of("linkage", linkage, _LINKAGES)
    E = emb.set_axis(emb_genes).loc[genes].to_numpy(np.float64)
    return pd.Series(_threshold_groups(E, float(threshold), linkage, center=bool(center)), index=genes), group_by


def _spatial_signal(tab: pd.DataFrame, genes: pd.Index, alpha, min_score, score_method: str):
    """Per gene: score, q-value (NaN when the score has none) and whether it has spatial signal."""
    s = pd.to_numeric(tab["score"], errors="coerce").reindex(genes).to_numpy(np.float64)
    q = (pd.to_numeric(tab["qval"], errors="coerce").reindex(genes).to_numpy(np.float64)
         if "qval" in tab.columns else np.full(len(genes), np.nan))
    signal = np.isfinite(s)
    if alpha is not None and "qval" in tab.columns:
        signal &= np.nan_to_num(q, nan=1.0) < alpha
    if min_score is not None:
        signal &= np.nan_to_num(s, nan=-np.inf) > float(min_score)
    if not signal.any():
        warnings.warn(f"no gene has spatial signal ({score_method} q-value < alpha={alpha}"
                      f"{'' if min_score is None else f', score > {min_score}'}); selecting by score alone",
                      stacklevel=3)
        signal = np.isfinite(s)
    return s, q, signal


def _top_per_group(genes: pd.Index, groups: pd.Series, s, q, signal, keep, drop: str):
    """All genes' table and the selection: the top ``keep`` of each group with signal (vectorised)."""
    df = pd.DataFrame({"group": groups.to_numpy(), "score": s, "qval": q, "signal": signal}, index=genes)
    group_signal = df.groupby("group")["signal"].transform("any").to_numpy(bool)
    size = df.groupby("group")["score"].transform("size").astype(np.int64)
    df["group_size"] = size
    if _is_fraction(keep):
        n_keep = np.ceil(float(keep) * size.to_numpy()).astype(np.int64)
    else:
        n_keep = np.full(len(df), int(keep), dtype=np.int64)
    cand = df[(df["signal"].to_numpy() if drop == "genes" else group_signal & np.isfinite(s))].copy()
    cand["rank"] = cand.groupby("group")["score"].rank(method="first", ascending=False).astype(np.int64)
    sel = cand[cand["rank"].to_numpy() <= pd.Series(n_keep, index=df.index).reindex(cand.index).to_numpy()]
    sel = sel.sort_values(["group", "rank"])[["group", "score", "qval", "rank", "group_size"]]
    sel.index.name = "gene"
    return df, sel


def _store_selection(adata, key_added: str, df: pd.DataFrame, sel: pd.DataFrame) -> None:
    """Write the selection (bool), every gene's group and its score to ``adata.var``."""
    names = pd.Index(adata.var_names.astype(str))
    _keys.store(adata, "var", key_added, np.asarray(names.isin(sel.index)))
    gcol = pd.Series(df["group"].reindex(names).to_numpy(), index=adata.var_names)
    if pd.api.types.is_numeric_dtype(df["group"]):
        gcol = gcol.astype("Int64")
    _keys.store(adata, "var", key_added + "_group", gcol)
    _keys.store(adata, "var", key_added + "_score",
                pd.Series(df["score"].reindex(names).to_numpy(np.float64), index=adata.var_names))


def prune_genes(
    model,
    adata,
    *,
    keep: float | int = 0.5,
    score="auto",
    group_by="contexts",
    threshold: float = 0.9,
    linkage: str = "average",
    center: bool = True,
    alpha: float | None = 0.05,
    min_score: float | None = None,
    drop: str = "groups",
    layer: str | None = None,
    spatial_key: str = "spatial",
    library_size_key: str | None = None,
    n_neighbors: int = 6,
    key_added: str = PRUNED,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Keep the most spatially variable gene(s) of each embedding group.

    Genes are grouped by embedding similarity, each gene gets a spatial
    variability score, and from every group the top ``keep`` members (a
    fraction of the group, or a number) are kept. Groups in which no gene
    has spatial signal are dropped entirely (``drop='genes'``: genes without
    signal are never kept).

    Parameters
    ----------
    model
        A fitted :class:`sigel.SIGEL` (or a genes x D embedding DataFrame,
        for ``group_by='threshold'`` or a given grouping).
    adata
        Spots x genes AnnData with raw counts and coordinates (the sample the
        scores are computed on; usually the one the model was fitted on).
    keep
        A float in (0, 1): keep ``ceil(keep * group size)`` genes per group;
        a whole number >= 1 (``1.0`` counts as 1): keep that many per group.
    score
        ``'auto'`` (sigel's SVG score when :func:`sigel.tl.svg` is available
        and ``model`` is a SIGEL model, else Moran's I), ``'svg'`` (slower:
        it simulates and embeds controls for every gene, and writes its own
        ``adata.var`` columns), ``'morans_i'`` (:func:`morans_i_table`), a precomputed
        ``pandas.Series`` (gene -> score) or DataFrame (column ``score``,
        optional ``qval``), or a callable ``f(adata, genes)`` returning one.
        Higher = more spatially variable.
    group_by
        ``'contexts'`` (the model's hard contexts), ``'threshold'`` (genes
        whose embeddings have cosine similarity >= ``threshold``, see
        ``linkage``), or a ``pandas.Series`` mapping gene -> group.
    threshold
        Cosine similarity threshold for ``group_by='threshold'``.
    linkage
        ``'single'`` (connected components of the similarity graph),
        ``'average'`` or ``'complete'`` (agglomerative clustering cut at
        cosine distance ``1 - threshold``).
    center
        For ``group_by='threshold'``: remove the mean embedding before the
        cosine similarity.
    alpha
        A gene has spatial signal when its score's q-value is below
        ``alpha`` (for scores with a ``qval`` column; ``None`` disables).
    min_score
        Alternatively (or additionally), signal requires ``score > min_score``.
        When no gene at all has signal, a warning is given and genes are
        selected by score alone.
    drop
        ``'groups'``: drop the groups in which no gene has signal, and keep
        the top ``keep`` of every other group by score; ``'genes'``: in
        addition, never keep a gene without signal.
    layer, spatial_key, library_size_key
        Where counts, coordinates and (optional) library sizes are read
        (for the Moran's I score). ``layer`` and ``library_size_key``
        default to those the model was fitted with, when ``adata`` has them.
    n_neighbors
        Neighbours per spot of the Moran's I spatial graph.
    key_added
        Prefix of the AnnData keys written.
    seed
        Seed for a randomised score (SVG simulations).

    Returns
    -------
    pandas.DataFrame
        The selected genes (index), sorted by group then rank, with
        ``group``, ``score``, ``qval`` (NaN when the score has none),
        ``rank`` (1 = best of its group) and ``group_size``. ``attrs``
        holds ``n_groups``, ``n_groups_kept`` and ``score_method``.
        Also written: ``adata.var[key_added]`` (bool, selected),
        ``adata.var[key_added + '_group']``, ``adata.var[key_added +
        '_score']`` and ``adata.uns[key_added]`` (parameters and counts).

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(60, shape=(15, 15))
    >>> model = sigel.SIGEL(epochs=2).fit(adata, seed=0)  # doctest: +SKIP
    >>> sel = sigel.tl.prune_genes(model, adata, keep=1)  # doctest: +SKIP
    >>> domains = sigel.tl.spatial_domains(adata, sel.index, n_domains=4)  # doctest: +SKIP
    """
    model, adata = _check_prune_inputs(model, adata, keep, alpha, drop)
    emb, ctx = _model_tables(model)
    layer, library_size_key = _fit_defaults(model, adata, layer, library_size_key)
    emb_genes, genes = _embedded_genes(emb, adata)
    groups, group_method = _gene_groups(group_by, genes, emb, emb_genes, ctx, threshold=threshold, linkage=linkage,
                                        center=center)
    # ---- scores
    raw_counts = bool(setup_options(model).get("counts", True))
    tab = _resolve_scores(score, adata, model, genes, layer=layer, spatial_key=spatial_key,
                          library_size_key=library_size_key, n_neighbors=n_neighbors, seed=seed, counts=raw_counts)
    score_method = tab.attrs.get("method", score if isinstance(score, str) else "given")
    if score_method == "auto":
        score_method = "svg"
    s, q, signal = _spatial_signal(tab, genes, alpha, min_score, score_method)
    df, sel = _top_per_group(genes, groups, s, q, signal, keep, drop)
    n_groups = int(df["group"].nunique())
    n_kept = int(sel["group"].nunique())
    sel.attrs.update(n_groups=n_groups, n_groups_kept=n_kept, score_method=str(score_method),
                     group_by=group_method)
    _store_selection(adata, key_added, df, sel)
    params = dict(keep=float(keep) if isinstance(keep, float) else int(keep), score=str(score_method),
                  group_by=group_method, threshold=float(threshold), linkage=linkage, center=bool(center),
                  alpha=None if alpha is None else float(alpha),
                  min_score=None if min_score is None else float(min_score), drop=drop,
                  n_neighbors=int(n_neighbors))
    _keys.store(adata, "uns", key_added, {"params": params, "n_genes": int(len(genes)), "n_groups": n_groups,
                                          "n_groups_kept": n_kept, "n_selected": int(len(sel))})
    logger.info(f"pruned {len(genes):,} genes in {n_groups} groups -> {len(sel):,} genes from {n_kept} groups "
                f"with spatial signal ({score_method})")
    return sel


# ============================================================ spatial domains
def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def _quiet():
    """Silence SpaGCN's prints and the warnings of its dependencies."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_spagcn():
    try:
        with _quiet():
            import SpaGCN as spg  # noqa: N813
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("method='spagcn' needs SpaGCN 1.2.7: pip install SpaGCN==1.2.7 'setuptools<81'") from e
    return spg


def _refine_labels(labels: np.ndarray, coords: np.ndarray, num_nbs: int) -> np.ndarray:
    """SpaGCN's refinement rule, vectorised.

    Each spot looks at itself and its ``num_nbs`` nearest spots; when fewer
    than half of those neighbours share its label and one label holds more
    than half, the spot takes that label (``SpaGCN.refine``, shape 'hexagon'
    = 6 neighbours, 'square' = 4).
    """
    n = len(labels)
    codes, uniq = pd.factorize(pd.Series(labels))
    nbrs, _ = tissue.knn_indices(coords, num_nbs)
    idx = np.column_stack([np.arange(n), nbrs])
    k = idx.shape[1]
    counts = np.zeros((n, len(uniq)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), codes[idx].ravel()), 1)
    own = counts[np.arange(n), codes]
    best = counts.argmax(axis=1)
    change = (own < num_nbs / 2) & (counts.max(axis=1) > num_nbs / 2)
    new = np.where(change, best, codes)
    return np.asarray(uniq)[new]


# ------------------------------------------------ SpaGCN on a sparse neighbour graph
#: most (spots x neighbours) entries the Gaussian-kernel graph may hold (~0.5 GB of float64 + indices)
_MAX_KERNEL_ENTRIES = 3e7
#: largest kernel weight per spot the sparse adjacency may leave out (float32 resolution of a row sum >= 1)
_KERNEL_TAIL = 1e-7


class _KernelGraph:
    """Distances of every spot to its ``k`` nearest spots, with ``k`` doubled on demand.

    SpaGCN weighs spot pairs by ``exp(-d^2 / (2 l^2))`` over *all* pairs (a
    dense spots x spots matrix). Here only the ``k`` nearest spots are kept:
    every omitted spot is at least as far as the ``k``-th, so the omitted
    weight of a row is at most ``(n - 1 - k) * exp(-d_k^2 / (2 l^2))``; the
    graph grows until that bound no longer matters for the decision at hand.
    """

    def __init__(self, coords: np.ndarray, k0: int = 32):
        self.coords = coords
        self.n = coords.shape[0]
        self._build(min(k0, self.n - 1))

    def _build(self, k):
        self.idx, self.dist = tissue.knn_indices(self.coords, k)
        self.k = self.idx.shape[1]

    def grow(self) -> bool:
        """Double ``k``; False when it cannot grow (all spots in, or the memory cap)."""
        if self.k >= self.n - 1 or self.n * min(2 * self.k, self.n - 1) > _MAX_KERNEL_ENTRIES:
            return False
        self._build(min(2 * self.k, self.n - 1))
        return True

    def weights(self, l):
        return np.exp(-(self.dist ** 2) / (2.0 * l * l))

    def p_bounds(self, l):
        """Bounds of SpaGCN's ``calculate_p`` (mean neighbourhood weight, self excluded) at ``l``."""
        w = self.weights(l)
        lo = float(w.sum(axis=1).mean())
        return lo, lo + float(((self.n - 1 - self.k) * w[:, -1]).mean())

    def max_tail(self, l):
        return float(((self.n - 1 - self.k) * self.weights(l)[:, -1]).max())

    def adjacency(self, l):
        """Sparse ``exp(-d^2 / (2 l^2))`` over the kept pairs (symmetric), 1 on the diagonal."""
        n, k = self.idx.shape
        rows = np.repeat(np.arange(n), k)
        W = sp.csr_matrix((self.weights(l).ravel(), (rows, self.idx.ravel())), shape=(n, n))
        W = W.maximum(W.T) + sp.identity(n, format="csr")
        return sp.csr_matrix(W, dtype=np.float32)


def _search_l(graph: _KernelGraph, p, *, start=0.01, end=1000.0, tol=0.01, max_run=100):
    """SpaGCN's ``search_l`` (same bisection) on the sparse kernel graph.

    Each neighbourhood contribution is computed within bounds; the graph
    grows until the bounds fall on one side of every comparison SpaGCN
    makes (below ``p - tol``, within ``tol``, above ``p + tol``), so the
    bisection takes the same path as on the dense matrix.
    """
    def region(v):
        return -1 if v < p - tol else (1 if v > p + tol else 0)

    def calc(l):
        while True:
            lo, hi = graph.p_bounds(l)
            if region(lo) == region(hi):
                return lo
            if not graph.grow():
                warnings.warn(f"SpaGCN length-scale search: neighbourhood contribution at l={l:.4g} is only "
                              f"known within [{lo:.4g}, {hi:.4g}] with {graph.k} neighbours per spot",
                              stacklevel=3)
                return lo

    p_low, p_high = calc(start), calc(end)
    if p_low > p + tol or p_high < p - tol:
        return None
    if abs(p_low - p) <= tol:
        return start
    if abs(p_high - p) <= tol:
        return end
    run = 0
    while (p_low + tol) < p < (p_high - tol):
        run += 1
        if run > max_run:
            return None
        mid = (start + end) / 2
        p_mid = calc(mid)
        if abs(p_mid - p) <= tol:
            return mid
        if p_mid <= p:
            start, p_low = mid, p_mid
        else:
            end, p_high = mid, p_mid
    return None


def _spagcn_coordinates(spg, coords, image):
    """SpaGCN's adjacency space: (x, y), or (x, y, z) with z from the histology image (as SpaGCN)."""
    if image is None:
        return coords
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise SigelInputError(f"`image` must be an H x W x 3 array; got shape {img.shape}")
    px = np.round(coords).astype(np.int64)
    with _quiet():
        c3 = np.asarray(spg.extract_color(x_pixel=px[:, 1].tolist(), y_pixel=px[:, 0].tolist(), image=img,
                                          beta=49), dtype=np.float64)
    c4 = (c3 - c3.mean()) / c3.std()
    z = c4 * max(np.std(coords[:, 0]), np.std(coords[:, 1]))
    return np.column_stack([coords, z])


def _torch_sparse(W: sp.csr_matrix):
    import torch

    C = W.tocoo()
    idx = torch.from_numpy(np.vstack([C.row, C.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(C.data.astype(np.float32)), C.shape,
                                   check_invariants=False).coalesce()


def _gc_dec_fit(model, X, adj, *, lr, max_epochs, res, tol, n_neighbors=10, update_interval=3):
    """``simple_GC_DEC.fit`` of SpaGCN 1.2.7 (Adam, Louvain initialisation on the graph-convolved
    features) with a sparse ``adj``; the same steps in the same order."""
    import scanpy as sc
    import torch
    from torch import optim
    from torch.nn.parameter import Parameter

    optimizer = optim.Adam(model.parameters(), lr=lr, weight_decay=0)
    Xt = torch.FloatTensor(X)
    features = model.gc(Xt, adj)
    a = sc.AnnData(features.detach().numpy())
    # exact kNN as scanpy uses below 4,096 spots (its pynndescent route above that fails with this scipy),
    # computed in chunks of at most 128 MB
    from sklearn import config_context

    with config_context(working_memory=128):
        sc.pp.neighbors(a, n_neighbors=n_neighbors, transformer="sklearn")
    sc.tl.louvain(a, resolution=res)
    y_pred = a.obs["louvain"].astype(int).to_numpy()
    model.n_clusters = len(np.unique(y_pred))
    y_last = y_pred
    model.mu = Parameter(torch.Tensor(model.n_clusters, model.nhid))
    f = pd.DataFrame(features.detach().numpy())
    centers = np.asarray(f.groupby(pd.Series(y_pred, name="Group")).mean())
    model.mu.data.copy_(torch.Tensor(centers))
    model.train()
    for epoch in range(max_epochs):
        if epoch % update_interval == 0:
            _, q = model(Xt, adj)
            p = model.target_distribution(q).data
        optimizer.zero_grad()
        _, q = model(Xt, adj)
        loss = model.loss_function(p, q)
        loss.backward()
        optimizer.step()
        y_pred = torch.argmax(q, dim=1).data.cpu().numpy()
        delta = np.sum(y_pred != y_last).astype(np.float32) / Xt.shape[0]
        y_last = y_pred
        if epoch > 0 and (epoch - 1) % update_interval == 0 and delta < tol:
            break


def _spagcn_fit(spg, X, adj, res, *, n_pcs, lr, max_epochs, tol, seed):
    """One SpaGCN run (``SpaGCN.train`` + ``predict``) on a sparse kernel adjacency (torch sparse)."""
    import torch
    from sklearn.decomposition import PCA

    _seed_all(seed)
    with _quiet():
        pca = PCA(n_components=n_pcs)
        pca.fit(X)
        embed = pca.transform(X)
        model = spg.simple_GC_DEC(embed.shape[1], embed.shape[1])
        _gc_dec_fit(model, embed, adj, lr=lr, max_epochs=max_epochs, res=res, tol=tol)
        _, q = model(torch.FloatTensor(embed), adj)
    y = torch.argmax(q, dim=1).data.cpu().numpy()
    return np.asarray(y), q.detach().numpy()


def _search_res(spg, X, adj, target, *, start, step, n_pcs, lr, max_epochs, tol, seed, max_run):
    """SpaGCN's ``search_res`` (same walk: step towards the target, halve on overshoot), passing ``num_pcs``."""
    tried = {}

    def n_at(r):
        r = round(r, 10)
        if r not in tried:
            y, _ = _spagcn_fit(spg, X, adj, r, n_pcs=n_pcs, lr=lr, max_epochs=max_epochs, tol=tol, seed=seed)
            tried[r] = len(np.unique(y))
        return tried[r]

    res = start
    old = n_at(res)
    run = 0
    while old != target:
        sign = 1 if old < target else -1
        cand = res + step * sign
        if cand <= 0:
            step /= 2
        else:
            new = n_at(cand)
            if new == target:
                return cand, tried
            if (1 if new < target else -1) == sign:
                res, old = cand, new
            else:
                step /= 2
        if run > max_run:
            break
        run += 1
    return res, tried


@contextlib.contextmanager
def _threads(n_threads):
    """Temporarily cap BLAS (threadpoolctl) and torch threads."""
    if n_threads is None:
        yield
        return
    assert_positive("n_threads", n_threads)
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        with threadpool_limits(int(n_threads)):
            yield
    finally:
        torch.set_num_threads(before)


def _run_spagcn(spg, X, coords, image, n_domains, *, p, n_pcs, lr, max_epochs, res_start, res_step,
                res_max_epochs, res_max_run, tol, seed):
    """Sparse adjacency, length scale, resolution search and the final SpaGCN fit; returns (l, res, labels).

    SpaGCN's dense spots x spots distance matrix is replaced by the distances
    to each spot's nearest spots (:class:`_KernelGraph`): the length scale is
    searched with SpaGCN's bisection on certified bounds, and the graph
    convolution runs on the sparse Gaussian kernel, kept until the weight it
    leaves out is below ``_KERNEL_TAIL`` per spot (1e-7, float32 resolution of a row sum >= 1, so the
    convolution matches SpaGCN's dense one up to rounding). Memory stays linear in spots.
    """
    graph = _KernelGraph(_spagcn_coordinates(spg, coords, image))
    l = _search_l(graph, p, start=0.01, end=1000, tol=0.01, max_run=100)
    if l is None:
        raise SigelInputError(f"SpaGCN found no length scale l with neighbourhood contribution p={p}; try another p")
    while graph.max_tail(l) > _KERNEL_TAIL and graph.grow():
        pass
    if graph.max_tail(l) > _KERNEL_TAIL:
        warnings.warn(f"SpaGCN adjacency keeps {graph.k} neighbours per spot; the kernel weight left out is up "
                      f"to {graph.max_tail(l):.3g} per spot", stacklevel=3)
    adj = _torch_sparse(graph.adjacency(l))
    logger.info(f"SpaGCN adjacency: {graph.k} neighbours per spot, {adj._nnz():,} weights (l={l:.4g})")
    res, _ = _search_res(spg, X, adj, n_domains, start=res_start, step=res_step, n_pcs=n_pcs, lr=lr,
                         max_epochs=res_max_epochs, tol=tol, seed=seed, max_run=res_max_run)
    y, _ = _spagcn_fit(spg, X, adj, res, n_pcs=n_pcs, lr=lr, max_epochs=max_epochs, tol=tol, seed=seed)
    return l, res, y


def _select_genes(adata, genes):
    names = pd.Index(adata.var_names.astype(str))
    if genes is None:
        return np.arange(len(names)), names
    if isinstance(genes, pd.DataFrame):
        genes = genes.index
    if isinstance(genes, pd.Series) and genes.dtype == bool:
        genes = genes.index[genes.to_numpy()]
    arr = np.asarray(genes)
    if arr.dtype == bool:
        if arr.shape != (len(names),):
            raise SigelInputError(f"boolean `genes` must have one entry per gene ({len(names)}); got {arr.shape}")
        idx = np.flatnonzero(arr)
    else:
        sel = pd.Index(arr.astype(str))
        idx = names.get_indexer(sel)
        if np.any(idx < 0):
            miss = sel[idx < 0]
            raise SigelInputError(f"{len(miss)} of `genes` not in adata.var_names, e.g. {list(miss[:5])}")
    if len(idx) < 2:
        raise SigelInputError(f"`genes` must select at least 2 genes; got {len(idx)}")
    return idx, names[idx]


def spatial_domains(
    adata,
    genes=None,
    *,
    n_domains: int = 7,
    method: str = "spagcn",
    seed: int | None = 0,
    layer: str | None = None,
    spatial_key: str = "spatial",
    library_size_key: str | None = None,
    geometry: str = "auto",
    image: np.ndarray | None = None,
    refine: str | None = "auto",
    p: float = 0.5,
    n_pcs: int = 50,
    lr: float = 0.05,
    max_epochs: int = 200,
    res_start: float = 0.7,
    res_step: float = 0.1,
    res_max_epochs: int = 20,
    res_max_run: int = 10,
    tol: float = 5e-3,
    n_threads: int | None = None,
    key_added: str = _keys.DOMAINS,
    counts: bool = True,
) -> pd.DataFrame:
    """Spatial domains with SpaGCN on a chosen gene set.

    Counts are library-size normalised (over all genes, or
    ``obs[library_size_key]``) and log1p-transformed; the chosen genes go to
    SpaGCN 1.2.7 as a dense (spots x chosen genes) matrix. The adjacency
    comes from the spot coordinates (histology only when ``image`` is
    given) as a *sparse* Gaussian kernel over each spot's nearest spots
    (SpaGCN itself builds a dense spots x spots matrix; here memory stays
    linear in spots, and the kernel weight left out is below 1e-7 per
    spot); the length scale ``l`` is searched (SpaGCN's bisection) so that
    neighbours contribute a fraction ``p`` of each spot's expression, and
    the Louvain resolution so that SpaGCN finds ``n_domains`` domains.
    Labels are then refined by a neighbourhood majority (6 neighbours on
    Visium / free coordinates, 4 on square grids).

    Parameters
    ----------
    adata
        Spots x genes AnnData with raw counts and coordinates.
    genes
        Genes to cluster on: names, a boolean mask, or the table returned by
        :func:`prune_genes` (its index). Default: all genes.
    n_domains
        Number of domains wanted.
    method
        ``'spagcn'`` (the only method for now).
    seed
        Seeds Python, numpy and torch for every SpaGCN run: the same seed
        gives the same labels.
    layer, spatial_key, library_size_key
        Where counts, coordinates (lookup rule of `sigel.tissue.coordinates`:
        ``obsm[spatial_key]``, else ``obs['x','y']``, else the Visium array
        coordinates) and optional library sizes are read.
    geometry
        ``'auto'``, ``'visium'``, ``'grid'`` or ``'free'``; picks the
        refinement shape.
    image
        Optional H x W x 3 histology image whose pixel grid matches
        ``obsm[spatial_key]`` (x = column, y = row); turns on SpaGCN's
        histology term.
    refine
        ``'auto'`` (by geometry), ``'hexagon'``, ``'square'`` or ``None``
        (no refinement: the refined labels equal the raw ones).
    p
        Target neighbourhood contribution for SpaGCN's ``search_l``.
    n_pcs
        Principal components SpaGCN uses (capped by the number of genes).
    lr, max_epochs, tol
        SpaGCN training settings of the final run.
    res_start, res_step, res_max_epochs, res_max_run
        Louvain resolution search (SpaGCN's ``search_res`` settings).
    n_threads
        Cap on BLAS and torch CPU threads during the call (``None``: leave
        as is). On a busy machine ``1`` is often several times faster.
    key_added
        ``adata.obs`` key of the labels (``key_added + '_refined'`` for the
        refined ones).
    counts
        Require raw (whole-number) counts (default); ``False`` uses the
        values as they are. Genes are not filtered by detection: the chosen
        genes are clustered on as given.

    Returns
    -------
    pandas.DataFrame
        Indexed by spot, columns ``domain`` and ``domain_refined``
        (categorical). ``attrs`` holds ``l``, ``resolution``, ``n_genes`` and
        ``n_found``. Also written: ``adata.obs[key_added]``,
        ``adata.obs[key_added + '_refined']`` and ``adata.uns[key_added]``
        (parameters, ``l``, resolution).

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(60, shape=(15, 15), seed=1)
    >>> dom = sigel.tl.spatial_domains(adata, n_domains=4, seed=0, max_epochs=20)  # doctest: +SKIP
    >>> sigel.tl.domain_scores(dom, adata.obs["domain"])  # doctest: +SKIP
    """
    if not _is_anndata(adata):
        raise SigelInputError(f"`adata` must be an AnnData; got {type(adata).__name__}")
    assert_one_of("method", method, ("spagcn",))
    if isinstance(n_domains, bool) or int(n_domains) != n_domains or n_domains < 2:
        raise SigelInputError(f"`n_domains` must be an integer >= 2; got {n_domains!r}")
    n_domains = int(n_domains)
    assert_in_range("p", p, 1e-6, 1e6)
    assert_positive("n_pcs", n_pcs)
    assert_positive("max_epochs", max_epochs)
    assert_positive("res_start", res_start)
    assert_positive("res_step", res_step)
    if refine is not None:
        assert_one_of("refine", refine, ("auto", "hexagon", "square"))
    seed = settings.seed if seed is None else int(seed)
    n = adata.n_obs
    if n < max(3, n_domains):
        raise SigelInputError(f"need more spots than n_domains; got {n} spots for n_domains={n_domains}")
    assert_unique_names(adata.var_names.astype(str), "gene names (adata.var_names)")
    geom = _geometry(adata, spatial_key, geometry)
    coords = _coordinates(adata, spatial_key)
    idx, gnames = _select_genes(adata, genes)
    X = tissue.log_normalize(adata, gnames, layer=layer, library_size_key=library_size_key, counts=counts)
    X = np.asarray(X.toarray(), dtype=np.float32)  # SpaGCN 1.2.7 needs dense X (spots x chosen genes)
    n_pcs_used = int(min(n_pcs, X.shape[1], n - 1))

    spg = _import_spagcn()
    with _threads(n_threads):
        l, res, y = _run_spagcn(spg, X, coords, image, n_domains, p=p, n_pcs=n_pcs_used, lr=lr,
                                max_epochs=int(max_epochs), res_start=float(res_start), res_step=float(res_step),
                                res_max_epochs=int(res_max_epochs), res_max_run=int(res_max_run), tol=tol,
                                seed=seed)
    n_found = int(len(np.unique(y)))
    if n_found != n_domains:
        warnings.warn(f"SpaGCN found {n_found} domains instead of n_domains={n_domains} "
                      f"(resolution search ended at {res:.4g})", stacklevel=2)
    if refine is None:
        y_ref, shape = y.copy(), None
    else:
        shape = refine if refine != "auto" else ("square" if geom == "grid" else "hexagon")
        y_ref = _refine_labels(y, coords, 6 if shape == "hexagon" else 4)

    def cat(v):
        v = np.asarray(v).astype(np.int64)
        return pd.Categorical(v.astype(str), categories=[str(c) for c in np.unique(v)])

    out = pd.DataFrame({"domain": cat(y), "domain_refined": cat(y_ref)}, index=adata.obs_names)
    out.attrs.update(l=float(l), resolution=float(res), n_genes=int(len(gnames)), n_found=n_found)
    _keys.store(adata, "obs", key_added, out["domain"].to_numpy())
    _keys.store(adata, "obs", key_added + "_refined", out["domain_refined"].to_numpy())
    params = dict(method=method, n_domains=n_domains, seed=seed, p=float(p), n_pcs=n_pcs_used, lr=float(lr),
                  max_epochs=int(max_epochs), res_start=float(res_start), res_step=float(res_step),
                  geometry=geom, refine=shape, histology=image is not None, library_size_key=library_size_key)
    _keys.store(adata, "uns", key_added, {"params": params, "l": float(l), "resolution": float(res),
                                          "n_genes": int(len(gnames)), "n_found": n_found})
    logger.info(f"SpaGCN on {len(gnames):,} genes: {n_found} domains (l={l:.3g}, res={res:.3g})")
    return out


# =============================================================== domain scores
def domain_scores(labels, truth) -> pd.DataFrame:
    """Adjusted Rand index and normalised mutual information against a truth.

    Spots whose truth is missing (NA) are left out.

    Parameters
    ----------
    labels
        Predicted labels: an array / Series (one label set), or a DataFrame
        (one row of scores per column, e.g. the output of
        :func:`spatial_domains`). Series/DataFrames are aligned to ``truth``
        by index when both have one.
    truth
        Ground-truth labels (array or Series; NA = unknown).

    Returns
    -------
    pandas.DataFrame
        One row per label set (index: its name), columns ``ari``, ``nmi``
        and ``n_spots`` (spots scored).

    Examples
    --------
    >>> import sigel
    >>> sigel.tl.domain_scores([0, 0, 1, 1], ["a", "a", "b", None])
            ari  nmi  n_spots
    labels  1.0  1.0        3
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if isinstance(labels, pd.DataFrame):
        frame = labels
    elif isinstance(labels, pd.Series):
        frame = labels.to_frame(labels.name if labels.name is not None else "labels")
    else:
        frame = pd.DataFrame({"labels": list(labels)})
    tr = truth if isinstance(truth, pd.Series) else pd.Series(list(truth))
    if isinstance(truth, pd.Series) and isinstance(labels, (pd.Series, pd.DataFrame)) \
            and not frame.index.equals(tr.index):
        if not frame.index.isin(tr.index).all():
            raise SigelInputError("`labels` and `truth` have different indices (spot names)")
        tr = tr.reindex(frame.index)
    elif len(tr) != len(frame):
        raise SigelInputError(f"`labels` has {len(frame)} entries but `truth` has {len(tr)}")
    tr = tr.reset_index(drop=True)
    ok = tr.notna().to_numpy()
    if not ok.any():
        raise SigelInputError("`truth` is all NA")
    t = tr[ok].astype(str).to_numpy()
    rows = {}
    for col in frame.columns:
        lab = frame[col].reset_index(drop=True)
        okc = ok & lab.notna().to_numpy()
        lv = lab[okc].astype(str).to_numpy()
        tv = tr[okc].astype(str).to_numpy()
        rows[str(col)] = dict(ari=float(adjusted_rand_score(tv, lv)),
                              nmi=float(normalized_mutual_info_score(tv, lv)), n_spots=int(okc.sum()))
    del t
    out = pd.DataFrame.from_dict(rows, orient="index")[["ari", "nmi", "n_spots"]]
    return out
