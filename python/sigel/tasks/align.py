"""Across samples: anchor alignment, shifted (disease-associated) genes and
altered interactions.

Embeddings of two separately trained models live in different coordinate
systems. :func:`align` fits a shallow map (orthogonal Procrustes, ridge
regression, or Procrustes plus a one-hidden-layer correction) on anchor genes
shared by both samples -- housekeeping genes by default -- and applies it to
every query gene. Every distance below is computed after alignment.

:func:`shifted_genes` ranks genes by how far they moved (the distance between
a gene's reference vector and its aligned query vector), standardised
against the anchors' *held-out* shifts (each anchor's aligned vector comes
from a map fitted without it, so anchors are not favoured by having been
fitted). :func:`altered_interactions` ranks gene pairs by the change of their
cosine similarity between the conditions, against a null from anchor-anchor
pairs. Given the count data, :func:`align` also measures every gene's vector
noise by embedding two binomially thinned halves of each sample
(:func:`split_half_embeddings`); the tests then expect noisy genes (no stable
pattern, few counts) to move more.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._settings import logger, settings
from .._stats import bh as _bh
from .._validate import SigelInputError, assert_in_range, assert_one_of, assert_positive
from ._genes import embedding_frame, hard_contexts, unit_rows
from ._model import setup_options

__all__ = [
    "Alignment", "align", "shifted_genes", "altered_interactions", "interaction_modules",
    "housekeeping_genes", "split_half_embeddings",
]

HOUSEKEEPING_FILE = "hk_genes_eisenberg_levanon_2013.txt.gz"
HOUSEKEEPING_CITATION = (
    "Eisenberg E, Levanon EY. Human housekeeping genes, revisited. Trends in Genetics "
    "29(10):569-574 (2013). doi:10.1016/j.tig.2013.05.010"
)
_METHODS = ("orthogonal", "linear", "mlp")


# --------------------------------------------------------------------------- anchors

def housekeeping_genes() -> pd.Index:
    """The bundled human housekeeping gene symbols (default alignment anchors).

    3,804 genes expressed uniformly across 16 human tissues (Eisenberg &
    Levanon 2013, Trends in Genetics 29:569). The file is shared with the R
    package (``system.file('extdata', 'housekeeping', package = 'sigel')``).

    Returns
    -------
    pandas.Index
        Gene symbols (upper case, as published).

    Examples
    --------
    >>> import sigel
    >>> hk = sigel.tl.housekeeping_genes()
    >>> "PSMB2" in hk
    True
    """
    from ..datasets import extdata_dir

    path = extdata_dir() / "housekeeping" / HOUSEKEEPING_FILE
    with gzip.open(path, "rt") as fh:
        genes = [ln.strip() for ln in fh if ln.strip()]
    return pd.Index(pd.unique(np.asarray(genes, dtype=object)), name="gene")


def _match_anchors(anchors, shared: pd.Index) -> tuple[pd.Index, int]:
    """Anchor names -> shared gene names, exact first, then case-insensitive."""
    req = pd.Index(pd.unique(np.asarray([str(a) for a in anchors], dtype=object)))
    exact = req[req.isin(shared)]
    up = pd.Series(shared.to_numpy(), index=shared.str.upper())
    up = up[~up.index.duplicated()]
    rest = req[~req.isin(shared)]
    via = up.reindex(rest.str.upper()).dropna().to_numpy()
    found = pd.Index(pd.unique(np.concatenate([exact.to_numpy(), via])))
    # keep the order of the shared genes (deterministic whatever the input order)
    return shared[shared.isin(found)], len(req)


# --------------------------------------------------------------------------- maps

@dataclass
class _Map:
    """A fitted map from query space to reference space (plain arrays)."""

    method: str
    mx: np.ndarray
    my: np.ndarray
    W: np.ndarray
    scale: float = 1.0
    mlp: object = None
    sx: float = 1.0
    sy: float = 1.0

    def predict(self, X: np.ndarray) -> np.ndarray:
        Y = (X - self.mx) @ self.W * self.scale + self.my
        if self.mlp is not None:
            Y = Y + self.sy * self.mlp.predict((X - self.mx) / self.sx).reshape(Y.shape)
        return Y


def _fit_once(X, Y, method, *, center, scale, alpha, hidden, seed) -> _Map:
    mx = X.mean(0) if center else np.zeros(X.shape[1])
    my = Y.mean(0) if center else np.zeros(Y.shape[1])
    Xc, Yc = X - mx, Y - my
    if method == "linear":
        # penalty in units of the mean per-dimension variance: alpha ~ pseudo-anchors per dimension
        lam = alpha * max(float((Xc**2).sum()) / Xc.size, 1e-12)
        A = Xc.T @ Xc + lam * np.eye(X.shape[1])
        W = np.linalg.solve(A, Xc.T @ Yc)
        return _Map("linear", mx, my, W)
    U, S, Vt = np.linalg.svd(Xc.T @ Yc, full_matrices=False)
    W = U @ Vt
    s = float(S.sum() / max((Xc**2).sum(), 1e-12)) if scale else 1.0
    m = _Map(method, mx, my, W, s)
    if method == "mlp":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        resid = Y - m.predict(X)
        sx = float(np.sqrt(max((Xc**2).mean(), 1e-24)))
        sy = float(np.sqrt(max((resid**2).mean(), 1e-24)))
        net = MLPRegressor(hidden_layer_sizes=(int(hidden),), activation="tanh", solver="lbfgs",
                           alpha=float(alpha), max_iter=300, random_state=int(seed) % (2**32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            net.fit(Xc / sx, resid / sy)
        m.mlp, m.sx, m.sy = net, sx, sy
    return m


def _fit_map(X, Y, method, *, trim, n_trim_iter=5, **kw) -> tuple[_Map, np.ndarray]:
    """Fit, optionally dropping the ``trim`` fraction of worst-fitting anchors and refitting."""
    keep = np.ones(len(X), dtype=bool)
    m = _fit_once(X, Y, method, **kw)
    if trim <= 0:
        return m, keep
    for _ in range(n_trim_iter):
        res = np.linalg.norm(Y - m.predict(X), axis=1)
        new = res <= np.quantile(res, 1.0 - trim)
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
        m = _fit_once(X[keep], Y[keep], method, **kw)
    return m, keep


# --------------------------------------------------------------------------- split-half noise

def _split_counts(adata, layer, lib_key, seed):
    """Two AnnData halves of the counts by binomial thinning (each ~half the depth)."""
    import anndata as ad
    import scipy.sparse as sp

    from .. import tissue

    X = tissue.counts(adata, layer, dtype=np.float64)
    vals = X.data
    if vals.size and not np.allclose(vals, np.round(vals)):
        logger.warning("split-half noise: values are not counts; thinning rounded values")
    n = np.maximum(np.round(vals), 0).astype(np.int64)
    rng = np.random.default_rng([int(seed), 13])
    a = rng.binomial(n, 0.5).astype(np.float32)
    halves = []
    for part in (a, (n - a).astype(np.float32)):
        M = sp.csr_matrix((part, X.indices.copy(), X.indptr.copy()), shape=X.shape)
        M.eliminate_zeros()
        h = ad.AnnData(X=M, obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names.copy()))
        for k in adata.obsm.keys():
            h.obsm[k] = adata.obsm[k]
        if layer is not None:
            h.layers[layer] = M
        if lib_key is not None and lib_key in h.obs:
            h.obs[lib_key] = pd.to_numeric(h.obs[lib_key]) / 2.0
        halves.append(h)
    return halves


def split_half_embeddings(model, adata, *, genes=None, seed: int | None = None, **image_options):
    """Embed two binomially thinned halves of a sample's counts with its fitted model.

    Each count is split at random into two halves (``Binomial(n, 1/2)`` and
    the rest), the halves are turned into images with the options saved at
    fit time, and embedded by the trained encoder (no retraining). How far a
    gene's two half-embeddings lie apart measures the sampling noise of its
    vector: large for genes without a stable pattern.

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL` (uses ``transform`` and ``image_options_``).
    adata
        The AnnData the model was fitted on (raw counts).
    genes
        Genes to embed (default: the model's genes).
    seed
        Seeds the thinning (``None``: `sigel.settings.seed`).
    **image_options
        Overrides of the model's saved image options, passed to
        ``model.transform`` (e.g. ``library_size_key``).

    Returns
    -------
    tuple of pandas.DataFrame
        The two half-sample embeddings (genes x D).

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(60, seed=1)
    >>> model = sigel.SIGEL(epochs=2, embed_dim=8).fit(adata)      # doctest: +SKIP
    >>> a, b = sigel.tl.split_half_embeddings(model, adata)         # doctest: +SKIP
    """
    if not hasattr(model, "transform"):
        raise SigelInputError("split-half noise needs a fitted sigel.SIGEL model (with `transform`)")
    seed = settings.seed if seed is None else int(seed)
    opts = setup_options(model, image_options)
    layer, lib_key = opts.get("layer"), opts.get("library_size_key")
    from .. import tissue

    tissue.counts(adata, layer, integers=bool(opts.get("counts", True)))  # thinning needs non-negative counts
    genes = list(model.embeddings_.index if genes is None else genes)
    genes = [g for g in genes if g in set(adata.var_names)]
    out = []
    for h in _split_counts(adata, layer, lib_key, seed):
        out.append(model.transform(h, genes=genes, **image_options))
    return out[0], out[1]


def _gamma_identity_fit(y: np.ndarray, x: np.ndarray, n_iter: int = 25) -> tuple[float, float]:
    """Fit E[y] = a x + b (a, b >= 0) with Var[y] proportional to E[y]^2 (gamma GLM, identity link, IRLS)."""
    y = np.asarray(y, float)
    x = np.asarray(x, float)
    b_floor = max(float(np.median(y)) * 1e-6, 1e-300)
    a, b = 0.0, float(np.mean(y))
    mu = np.full_like(y, b)
    for _ in range(n_iter):
        w = 1.0 / np.maximum(mu, b_floor) ** 2
        A = np.column_stack([x, np.ones_like(x)])
        Aw = A * w[:, None]
        try:
            coef = np.linalg.solve(A.T @ Aw + 1e-12 * np.eye(2), Aw.T @ y)
        except np.linalg.LinAlgError:
            break
        a_new, b_new = max(float(coef[0]), 0.0), max(float(coef[1]), b_floor)
        if a_new == 0.0:  # refit the intercept alone
            b_new = max(float(np.sum(w * y) / np.sum(w)), b_floor)
        mu = a_new * x + b_new
        if abs(a_new - a) <= 1e-8 * (abs(a) + 1e-12) and abs(b_new - b) <= 1e-8 * b:
            a, b = a_new, b_new
            break
        a, b = a_new, b_new
    return a, b


# --------------------------------------------------------------------------- result

@dataclass
class Alignment:
    """Two samples' gene embeddings in one space (the result of :func:`align`).

    Attributes
    ----------
    reference
        Reference embeddings (genes x D_ref) as used for the fit (after
        ``normalize``).
    query
        Query embeddings (genes x D_query), same preprocessing.
    aligned
        Every query gene mapped into the reference space (genes x D_ref).
    heldout
        Like ``aligned`` for the shared genes, but each anchor's vector comes
        from the cross-validation fold that left it out; the statistics use
        this, so anchors are not favoured by having been fitted.
    anchors
        Anchor genes found in both samples (the candidates of the fit).
    anchor_table
        Per anchor: ``residual`` (in-sample distance after the full fit),
        ``heldout_shift`` (distance under the map fitted without it),
        ``used`` (kept by the trimmed fit) and ``fold``.
    method, params
        The map and the call's settings.
    diagnostics
        Numbers on the fit: anchors requested / found, shared genes, in-sample
        and held-out error (RMSE, relative error = 1 - R^2 of the anchors'
        reference vectors, nearest-anchor accuracy of held-out anchors).
    reference_contexts, query_contexts
        Hard context per gene from each model (``None`` for plain tables).
    noise
        Per shared gene, the split-half noise of its vector in the reference
        space: columns ``reference``, ``query`` and ``total`` (root of the sum
        of squares); ``None`` unless :func:`align` got the count data.
    """

    reference: pd.DataFrame
    query: pd.DataFrame
    aligned: pd.DataFrame
    heldout: pd.DataFrame
    anchors: pd.Index
    anchor_table: pd.DataFrame
    method: str
    params: dict
    diagnostics: dict
    reference_contexts: pd.Series | None = None
    query_contexts: pd.Series | None = None
    noise: pd.DataFrame | None = None
    map_: _Map | None = field(default=None, repr=False)
    query_offset_: np.ndarray | None = field(default=None, repr=False)

    @property
    def shared(self) -> pd.Index:
        """Genes embedded in both samples (reference order)."""
        return self.heldout.index

    @property
    def n_anchors(self) -> int:
        return len(self.anchors)

    def transform(self, embeddings: pd.DataFrame) -> pd.DataFrame:
        """Map further query-space vectors (genes x D_query) into the reference space."""
        emb = embedding_frame(embeddings)
        X = _preprocess(emb.to_numpy(), self.query_offset_, self.params["normalize"])
        return pd.DataFrame(self.map_.predict(X), index=emb.index, columns=self.reference.columns)

    def __repr__(self) -> str:
        d = self.diagnostics
        return (f"Alignment({self.method}: {d['n_shared']} shared genes, {self.n_anchors} anchors "
                f"({d['n_anchors_requested']} requested), held-out relative error "
                f"{d['heldout_relative_error']:.3f})")


# --------------------------------------------------------------------------- inputs

def _preprocess(X: np.ndarray, offset, normalize: str) -> np.ndarray:
    """Apply ``align``'s ``normalize`` step with a fixed offset (the sample mean of the shared genes)."""
    if normalize == "none" or offset is None:
        return np.asarray(X, dtype=np.float64)
    Z = np.asarray(X, dtype=np.float64) - offset
    return unit_rows(Z) if normalize == "unit" else Z


def _self_nn_accuracy(P: np.ndarray, T: np.ndarray, batch: int = 1024) -> float:
    """Fraction of rows of ``P`` whose most cosine-similar row of ``T`` is their own (batched)."""
    Pn, Tn = unit_rows(P), unit_rows(T)
    hits = 0
    for s in range(0, len(Pn), batch):
        S = Pn[s:s + batch] @ Tn.T
        hits += int(np.sum(S.argmax(1) == np.arange(s, s + S.shape[0])))
    return hits / max(len(Pn), 1)


def _read_sample(x, name: str):
    """Embedding table and (optionally) hard contexts of one sample."""
    try:
        emb = embedding_frame(x)
    except SigelInputError as e:
        raise SigelInputError(f"`{name}`: {e}") from None
    ctx = None
    if not isinstance(x, pd.DataFrame):
        try:
            ctx = hard_contexts(x)
        except Exception:  # memberships are optional
            ctx = None
    return emb, ctx


def _check_align_options(normalize, trim, n_folds, alpha, hidden) -> str:
    """Validate `align`'s options; return ``normalize`` as a name (booleans: True = 'unit', False = 'none')."""
    if normalize is True or normalize is False:
        normalize = "unit" if normalize else "none"
    assert_one_of("normalize", normalize, ("center", "unit", "none"))
    assert_in_range("trim", trim, 0.0, 0.5)
    assert_positive("n_folds", n_folds)
    assert_positive("alpha", alpha, allow_zero=True)
    assert_positive("hidden", hidden)
    return normalize


def _prepared_samples(reference, query, normalize: str, min_anchors: int):
    """Both samples' tables after ``normalize``, their contexts, the shared genes and the offsets removed."""
    ref, ref_ctx = _read_sample(reference, "reference")
    qry, qry_ctx = _read_sample(query, "query")
    if ref.shape[1] < 2 or qry.shape[1] < 2:
        raise SigelInputError(f"embeddings need at least 2 dimensions; got {ref.shape[1]} and {qry.shape[1]}")
    ref_cols = [str(c) for c in ref.columns]
    shared = ref.index[ref.index.isin(qry.index)]
    offsets = (None, None)
    if normalize != "none" and len(shared):
        mr, mq = ref.loc[shared].mean(0).to_numpy(), qry.loc[shared].mean(0).to_numpy()
        offsets = (mr, mq)
    ref = pd.DataFrame(_preprocess(ref.to_numpy(), offsets[0], normalize), index=ref.index, columns=ref_cols)
    qry = pd.DataFrame(_preprocess(qry.to_numpy(), offsets[1], normalize), index=qry.index,
                       columns=[str(c) for c in qry.columns])
    if len(shared) < min_anchors:
        raise SigelInputError(
            f"only {len(shared)} genes are embedded in both samples; alignment needs at least {min_anchors}. "
            "Do the two samples use the same gene identifiers (symbols vs Ensembl IDs)?"
        )
    return ref, qry, ref_ctx, qry_ctx, shared, offsets


def _anchor_genes(anchors, shared: pd.Index, min_anchors: int) -> tuple[pd.Index, int, str]:
    """The anchors embedded in both samples, how many were requested and where they came from."""
    if anchors is None:
        cand, n_req = _match_anchors(housekeeping_genes(), shared)
        source = "housekeeping (Eisenberg & Levanon 2013)"
    elif isinstance(anchors, str) and anchors == "shared":
        cand, n_req, source = shared, len(shared), "all shared genes"
    else:
        if isinstance(anchors, str):
            raise SigelInputError(f"`anchors` must be None, 'shared' or a list of gene names; got {anchors!r}")
        cand, n_req = _match_anchors(list(np.atleast_1d(np.asarray(anchors, dtype=object))), shared)
        source = "user list"
    n_found = len(cand)
    logger.info(f"align: {n_found} of {n_req} anchors ({source}) embedded in both samples")
    if n_found < max(int(min_anchors), 3):
        raise SigelInputError(
            f"only {n_found} of {n_req} anchor genes ({source}) are embedded in both samples; need at least "
            f"{max(int(min_anchors), 3)}. Pass `anchors=` (gene names present in both), or anchors='shared'."
        )
    return cand, n_req, source


def _anchor_folds(n_found: int, n_folds: int, seed: int) -> tuple[int, np.ndarray]:
    """Number of folds and each anchor's fold (balanced, seeded), the same for every candidate map."""
    k = int(min(n_folds, n_found))
    rng = np.random.default_rng([seed, 7])
    fold = np.empty(n_found, dtype=int)
    fold[rng.permutation(n_found)] = np.arange(n_found) % k
    return k, fold


def _cross_validated_map(X, Y, fold, k, method, *, trim, **kw):
    """k-fold held-out anchor predictions: (method, predictions, CV errors); 'auto' keeps the better of two maps."""
    def _cv(meth):
        Yh = np.empty_like(Y)
        for f in range(k):
            te = fold == f
            mf, _ = _fit_map(X[~te], Y[~te], meth, trim=trim, **kw)
            Yh[te] = mf.predict(X[te])
        return Yh

    if method != "auto":
        return method, _cv(method), {}
    cands = {mt: _cv(mt) for mt in ("orthogonal", "linear")}
    cv_errors = {mt: float(np.mean(np.sum((Y - yh) ** 2, 1))) for mt, yh in cands.items()}
    method = min(cv_errors, key=cv_errors.get)
    logger.info(f"align: method='auto' chose {method!r} (held-out MSE "
                + ", ".join(f"{a} {b:.4g}" for a, b in cv_errors.items()) + ")")
    return method, cands[method], cv_errors


def _half_embeddings(obj, data, name: str, shared: pd.Index, seed: int):
    """One sample's two half-sample embeddings: given as a pair of tables, or embedded from its counts."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(d, pd.DataFrame) for d in data):
            raise SigelInputError(f"`{name}_data` given as a sequence must hold two half-sample "
                                  "embedding DataFrames (see split_half_embeddings)")
        return [d.set_axis(d.index.astype(str), axis=0) for d in data]
    if not hasattr(obj, "transform"):
        raise SigelInputError(f"`{name}_data` (an AnnData) needs `{name}` to be a fitted sigel.SIGEL model")
    return split_half_embeddings(obj, data, genes=shared, seed=seed)


def _split_half_noise(reference, query, reference_data, query_data, *, shared, offsets, normalize, m, seed):
    """Split-half noise of every shared gene's vector in the reference space (``None`` without the data)."""
    if (reference_data is None) != (query_data is None):
        raise SigelInputError("pass both `reference_data` and `query_data` (or neither)")
    if reference_data is None:
        return None

    def _prep(E, off):
        Z = E.reindex(shared).to_numpy(dtype=np.float64)
        return _preprocess(Z, off, normalize)

    ra, rb = _half_embeddings(reference, reference_data, "reference", shared, seed)
    qa, qb = _half_embeddings(query, query_data, "query", shared, seed + 1)
    mr0, mq0 = offsets
    d_r = np.linalg.norm(_prep(ra, mr0) - _prep(rb, mr0), axis=1)
    Qa, Qb = _prep(qa, mq0), _prep(qb, mq0)
    okq = np.isfinite(Qa).all(1) & np.isfinite(Qb).all(1)
    d_q = np.full(len(shared), np.nan)
    if okq.any():
        d_q[okq] = np.linalg.norm(m.predict(Qa[okq]) - m.predict(Qb[okq]), axis=1)
    n_miss = int((~np.isfinite(d_r) | ~np.isfinite(d_q)).sum())
    if n_miss:
        logger.warning(f"align: {n_miss} genes dropped by the image filters in a half sample; "
                       "their noise is set to the largest observed")
    d_r = np.where(np.isfinite(d_r), d_r, np.nanmax(d_r))
    d_q = np.where(np.isfinite(d_q), d_q, np.nanmax(d_q))
    noise = pd.DataFrame({"reference": d_r, "query": d_q, "total": np.sqrt(d_r**2 + d_q**2)}, index=shared)
    noise.index.name = "gene"
    return noise


def _fit_diagnostics(Y, Yhat, resid, ho, cv_errors, **counts) -> dict:
    """``counts`` followed by in-sample and held-out RMSE / relative error and held-out nearest-anchor accuracy."""
    tot = float(((Y - Y.mean(0)) ** 2).sum(1).mean())
    return dict(
        **counts,
        rmse=float(np.sqrt(np.mean(resid**2))), heldout_rmse=float(np.sqrt(np.mean(ho**2))),
        relative_error=float(np.mean(resid**2) / tot) if tot > 0 else float("nan"),
        heldout_relative_error=float(np.mean(ho**2) / tot) if tot > 0 else float("nan"),
        heldout_nn_accuracy=_self_nn_accuracy(Yhat, Y),
        method_cv_mse=cv_errors,
    )


def align(reference, query, anchors=None, *, method: str = "auto", normalize: str = "center",
          center: bool = True, scale: bool = True, alpha: float = 1.0, hidden: int = 32, trim: float = 0.0,
          n_folds: int = 5, min_anchors: int = 5, reference_data=None, query_data=None,
          seed: int | None = None) -> Alignment:
    """Map a query sample's gene embeddings into a reference sample's space.

    A shallow map is fitted on anchor genes embedded in both samples and
    applied to every query gene. k-fold cross-validation over the anchors
    gives each anchor a held-out aligned vector (used by the downstream
    statistics) and an honest alignment error.

    Parameters
    ----------
    reference, query
        Fitted `sigel.SIGEL` models, AnnData objects with ``varm['sigel']``,
        or genes x D embedding DataFrames. Models (and AnnData with
        memberships) also provide each gene's context.
    anchors
        Anchor gene names. ``None`` uses the bundled human housekeeping genes
        (:func:`housekeeping_genes`); names are matched exactly, then
        case-insensitively (so mouse symbols such as ``Actb`` match).
        ``'shared'`` uses every gene embedded in both samples (assumes most
        genes do not change; combine with ``trim``).
    method
        ``'orthogonal'`` (Procrustes rotation, with optional centering and
        isotropic scaling; preserves cosine relations within a sample),
        ``'linear'`` (ridge regression with intercept, penalty ``alpha``),
        ``'mlp'`` (Procrustes plus a one-hidden-layer correction of
        ``hidden`` tanh units with L2 penalty ``alpha``; scikit-learn), or
        ``'auto'`` (default): whichever of ``'orthogonal'`` and ``'linear'``
        has the smaller cross-validated anchor error (two separately trained
        networks need not be related by a rotation; both errors are kept in
        ``diagnostics['method_cv_mse']``).
    normalize
        Preprocessing of each sample's vectors before the fit: ``'center'``
        subtracts the sample's mean vector over the shared genes (an offset
        common to all genes carries no information on any one gene, and
        relations become centred cosines); ``'unit'`` also scales every gene
        vector to unit length (then genes with weak patterns, close to the
        centre, weigh as much as the others); ``'none'`` uses the vectors as
        they are.
    center, scale
        Fit a translation (anchor means) and, for the Procrustes maps, an
        isotropic scale.
    alpha
        Ridge penalty of ``'linear'``, in units of the mean per-dimension
        variance of the query anchors (about ``alpha`` pseudo-anchors per
        dimension), or the L2 weight decay of ``'mlp'`` (on standardised
        inputs).
    hidden
        Hidden units of the ``'mlp'`` map.
    trim
        Fraction of anchors with the largest residuals left out of the fit
        (iteratively refitted; 0 = use all). Robust to anchors that did change.
    n_folds
        Folds of the anchor cross-validation (capped at the number of anchors).
    min_anchors
        Fewest anchors accepted.
    reference_data, query_data
        Optional: the AnnData (raw counts) each model was fitted on, or a pair
        of precomputed half-sample embeddings. Then every shared gene's vector
        noise is estimated by splitting its counts into two random halves
        (:func:`split_half_embeddings`) and embedding both with the fitted
        model; :func:`shifted_genes` and
        :func:`altered_interactions` then expect noisy genes (no stable
        pattern, few counts) to move more. Strongly recommended on real data.
    seed
        Seeds the folds, the MLP and the count splitting (``None``:
        `sigel.settings.seed`).

    Returns
    -------
    Alignment
        Reference, query, aligned and held-out aligned embeddings, the anchors
        with their residuals, and ``diagnostics`` (also logged): anchors
        requested / found, held-out RMSE and relative error.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(100)]
    >>> ref = pd.DataFrame(rng.normal(size=(100, 8)), index=genes)
    >>> rot = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    >>> qry = pd.DataFrame(ref.to_numpy() @ rot, index=genes)
    >>> al = sigel.tl.align(ref, qry, anchors=genes[:60])
    >>> al.diagnostics["n_anchors"]
    60
    """
    assert_one_of("method", method, _METHODS + ("auto",))
    method_requested = method
    normalize = _check_align_options(normalize, trim, n_folds, alpha, hidden)
    seed = settings.seed if seed is None else int(seed)
    ref, qry, ref_ctx, qry_ctx, shared, offsets = _prepared_samples(reference, query, normalize, min_anchors)
    cand, n_req, source = _anchor_genes(anchors, shared, min_anchors)
    n_found = len(cand)
    D = max(ref.shape[1], qry.shape[1])
    if n_found < 2 * D and method in ("orthogonal", "mlp"):
        logger.warning(f"align: {n_found} anchors for {D} dimensions: the map is poorly determined; "
                       "consider method='linear' (ridge) or more anchors")
    kw = dict(center=center, scale=scale, alpha=alpha, hidden=hidden, seed=seed)
    X = qry.loc[cand].to_numpy()
    Y = ref.loc[cand].to_numpy()
    k, fold = _anchor_folds(n_found, n_folds, seed)
    method, Yhat, cv_errors = _cross_validated_map(X, Y, fold, k, method, trim=trim, **kw)
    m, keep = _fit_map(X, Y, method, trim=trim, **kw)
    resid = np.linalg.norm(Y - m.predict(X), axis=1)
    ho = np.linalg.norm(Y - Yhat, axis=1)
    noise = _split_half_noise(reference, query, reference_data, query_data, shared=shared, offsets=offsets,
                              normalize=normalize, m=m, seed=seed)
    # ---- outputs
    aligned = pd.DataFrame(m.predict(qry.to_numpy()), index=qry.index, columns=ref.columns)
    heldout = aligned.loc[shared].copy()
    heldout.loc[cand] = Yhat
    tab = pd.DataFrame({"residual": resid, "heldout_shift": ho, "used": keep, "fold": fold}, index=cand)
    tab.index.name = "gene"
    diag = _fit_diagnostics(Y, Yhat, resid, ho, cv_errors, method=method, anchor_source=source,
                            n_anchors_requested=int(n_req), n_anchors=int(n_found), n_anchors_used=int(keep.sum()),
                            n_shared=int(len(shared)), n_reference=int(ref.shape[0]), n_query=int(qry.shape[0]),
                            n_folds=k)
    params = dict(method=method_requested, normalize=normalize, center=bool(center), scale=bool(scale),
                  alpha=float(alpha), hidden=int(hidden), trim=float(trim), n_folds=int(n_folds),
                  min_anchors=int(min_anchors), seed=seed,
                  anchors=None if anchors is None else ("shared" if isinstance(anchors, str) else "list"))
    logger.info(f"align ({method}): {len(shared):,} shared genes, {n_found} anchors; held-out RMSE "
                f"{diag['heldout_rmse']:.3f}, relative error {diag['heldout_relative_error']:.3f}, "
                f"nearest-anchor accuracy {diag['heldout_nn_accuracy']:.2f}")
    return Alignment(reference=ref, query=qry, aligned=aligned, heldout=heldout, anchors=cand,
                     anchor_table=tab, method=method, params=params, diagnostics=diag,
                     reference_contexts=ref_ctx, query_contexts=qry_ctx, noise=noise, map_=m,
                     query_offset_=offsets[1])


# --------------------------------------------------------------------------- statistics


_SHIFT_RESOLUTION = 1e-6


def _robust_loc_scale(x: np.ndarray) -> tuple[float, float]:
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    if not np.isfinite(mad) or mad <= 0:
        mad = float(np.std(x)) or 1.0
    return med, mad


def _check_alignment(alignment) -> None:
    if not isinstance(alignment, Alignment):
        raise SigelInputError(f"`alignment` must be the result of sigel.tl.align(); got {type(alignment).__name__}")


def shifted_genes(alignment: Alignment, *, metric: str = "euclidean", null: str = "lognormal",
                  use_noise: bool | None = None, covariate=None) -> pd.DataFrame:
    """Rank genes by how far they moved between the samples after alignment.

    A gene's shift is the distance between its reference vector and its
    aligned query vector (for anchors: the held-out aligned vector). Shifts
    are standardised against the anchors' held-out shifts: ``score`` is a
    robust z-score of the log shift (median and MAD of the anchors), so a
    few anchors that did change do not widen the null.

    Parameters
    ----------
    alignment
        The result of :func:`align`.
    metric
        ``'euclidean'`` (distance in the aligned space) or ``'cosine'``
        (1 - cosine similarity).
    null
        ``'lognormal'``: p-values from the normal tail of the score (a
        log-normal null fitted robustly to the anchor shifts; fine-grained
        even with few anchors). ``'empirical'``: the fraction of anchor shifts
        at least as large (resolution 1 / (n_anchors + 1)).
    use_noise
        Account for each gene's split-half vector noise (``alignment.noise``,
        from ``align(..., reference_data=, query_data=)``): the expected null
        shift is ``a * noise^2 + b`` (fitted on the anchors, gamma GLM), and
        the score uses ``shift / expected``. ``None``: whenever available.
    covariate
        Optional per-gene Series (e.g. log detection rate) the shift size may
        depend on: a straight-line trend of the anchors' log shifts on it is
        removed before standardising (genes without a value get the median).

    Returns
    -------
    pandas.DataFrame
        Indexed by gene (every gene embedded in both samples), sorted by
        rank: ``shift``, ``cosine`` (reference vs aligned query), ``score``,
        ``pval``, ``qval`` (Benjamini-Hochberg), ``rank`` (1 = moved most),
        ``anchor``, with noise ``noise`` and ``expected_shift``, and, when the
        inputs carry contexts, ``context_reference``
        / ``context_query``. ``attrs`` holds the null's location and scale.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(100)]
    >>> ref = pd.DataFrame(rng.normal(size=(100, 8)), index=genes)
    >>> qry = ref + rng.normal(scale=0.1, size=ref.shape)
    >>> qry.iloc[:5] = rng.normal(size=(5, 8))            # five genes change
    >>> al = sigel.tl.align(ref, qry, anchors=genes[50:])
    >>> tab = sigel.tl.shifted_genes(al)
    >>> sorted(tab.index[:5])
    ['g0', 'g1', 'g2', 'g3', 'g4']
    """
    _check_alignment(alignment)
    assert_one_of("metric", metric, ("euclidean", "cosine"))
    assert_one_of("null", null, ("lognormal", "empirical"))
    genes = alignment.shared
    R = alignment.reference.loc[genes].to_numpy()
    A = alignment.heldout.to_numpy()
    cos = np.sum(unit_rows(R) * unit_rows(A), axis=1)
    shift = np.linalg.norm(R - A, axis=1) if metric == "euclidean" else 1.0 - cos
    is_anchor = genes.isin(alignment.anchors)
    # Numerical resolution of a shift: embeddings are single-precision model outputs, so differences
    # below ~1e-6 of the vectors' typical length are rounding, not movement (they also differ between
    # CPUs' floating-point paths). Shifts are floored there and the null cannot be narrower than it.
    norm = float(np.sqrt(np.mean(np.sum(R**2, axis=1)))) if len(R) else 1.0
    res = _SHIFT_RESOLUTION * (norm if metric == "euclidean" else 1.0)
    med_anchor = float(np.median(shift[is_anchor]))
    eps = max(med_anchor * 1e-3, res, 1e-300)
    ls = np.log(np.maximum(shift, 0) + eps)
    if use_noise is None:
        use_noise = alignment.noise is not None
    expected = None
    if use_noise:
        if alignment.noise is None:
            raise SigelInputError("use_noise=True but the alignment has no noise estimate; call "
                                  "align(..., reference_data=adata_ref, query_data=adata_query)")
        nz2 = alignment.noise["total"].reindex(genes).to_numpy() ** 2
        y = (shift**2 if metric == "euclidean" else shift) + eps**2
        a, b = _gamma_identity_fit(y[is_anchor], nz2[is_anchor])
        expected = a * nz2 + b
        ls = 0.5 * np.log(y / expected) if metric == "euclidean" else np.log(y / expected)
    trend = np.zeros(len(genes))
    if covariate is not None:
        cv = pd.Series(covariate)
        cv.index = cv.index.astype(str)
        c = pd.to_numeric(cv.reindex(genes), errors="coerce").to_numpy(dtype=np.float64)
        c = np.where(np.isfinite(c), c, np.nanmedian(c))
        ok = is_anchor & np.isfinite(c)
        if ok.sum() >= 5 and np.ptp(c[ok]) > 0:
            # robust line: least squares, then refit without the worst 10 %
            b = np.polyfit(c[ok], ls[ok], 1)
            r = np.abs(ls[ok] - np.polyval(b, c[ok]))
            sel = r <= np.quantile(r, 0.9)
            b = np.polyfit(c[ok][sel], ls[ok][sel], 1)
            trend = np.polyval(b, c)
    resid = ls - trend
    loc, sc = _robust_loc_scale(resid[is_anchor])
    # a shift moved by one resolution step changes the log shift by log1p(res / (shift + eps)):
    # the null's scale is never below that step at the anchors' typical shift
    sc_floor = float(np.log1p(res / (med_anchor + eps)))
    if sc < sc_floor:
        logger.warning(f"shifted_genes: the anchors' held-out shifts ({med_anchor:.3g}) are at the numerical "
                       f"resolution of the vectors ({res:.3g}); the null's scale is floored there")
        sc = sc_floor
    z = (resid - loc) / sc
    if null == "lognormal":
        from scipy.stats import norm

        p = norm.sf(z)
    else:
        p = _empirical_pvalues(resid[is_anchor], resid)
    q = _bh(p)
    tab = pd.DataFrame({"shift": shift, "cosine": cos, "score": z, "pval": p, "qval": q, "anchor": is_anchor},
                       index=genes)
    tab.index.name = "gene"
    if expected is not None:
        tab["noise"] = alignment.noise["total"].reindex(genes).to_numpy()
        tab["expected_shift"] = np.sqrt(expected) if metric == "euclidean" else expected
    if alignment.reference_contexts is not None:
        tab["context_reference"] = alignment.reference_contexts.reindex(genes).to_numpy()
    if alignment.query_contexts is not None:
        tab["context_query"] = alignment.query_contexts.reindex(genes).to_numpy()
    order = np.lexsort((-tab["score"].to_numpy(), tab["pval"].to_numpy()))
    tab = tab.iloc[order]
    tab.insert(5, "rank", np.arange(1, len(tab) + 1))
    tab.attrs.update(null=null, metric=metric, null_location=loc, null_scale=sc, n_null=int(is_anchor.sum()),
                     use_noise=bool(use_noise))
    logger.info(f"shifted_genes: {int((q < 0.05).sum())} of {len(genes):,} genes shifted at q < 0.05 "
                f"(null from {int(is_anchor.sum())} anchors)")
    return tab


def _unit_vectors(alignment: Alignment, genes) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length reference and held-out aligned query vectors of ``genes``."""
    R = unit_rows(alignment.reference.loc[genes].to_numpy())
    Q = unit_rows(alignment.heldout.loc[genes].to_numpy())
    return R, Q


def _empirical_pvalues(null: np.ndarray, stat: np.ndarray) -> np.ndarray:
    """Fraction (+1 smoothed) of ``null`` values at least as large as each ``stat``."""
    nul = np.sort(null)
    ge = len(nul) - np.searchsorted(nul, stat, side="left")
    return (1.0 + ge) / (1.0 + len(nul))


def _pair_null(alignment: Alignment, max_pairs: int, rng):
    """Anchor-anchor pairs (indices into ``alignment.anchors``) and their cosine change
    (held-out aligned anchors)."""
    a = alignment.anchors
    R, Q = _unit_vectors(alignment, a)
    n = len(a)
    n_all = n * (n - 1) // 2
    if n_all <= max_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        i = rng.integers(0, n, size=int(max_pairs * 1.1) + 10)
        j = rng.integers(0, n, size=i.size)
        ok = i != j
        i, j = i[ok][:max_pairs], j[ok][:max_pairs]
    return i, j, np.sum(Q[i] * Q[j], 1) - np.sum(R[i] * R[j], 1)


def _gene_change_stats(alignment: Alignment, genes: pd.Index, n_probe: int, rng) -> pd.DataFrame:
    """Median (``center``) and robust spread (MAD, ``scale``) of each gene's cosine changes against a
    random probe set of shared genes.

    A gene that moved as a whole, or whose vector is noisy, changes its
    relation to every other gene: the median says by how much on the whole,
    the spread how unevenly. Removing both genes' medians from a pair's
    change and dividing by their spreads asks which relations changed beyond
    that (and removes the bias of focus genes chosen for having moved).
    """
    shared = alignment.shared
    m = int(min(n_probe, len(shared)))
    probe = shared[np.sort(rng.choice(len(shared), size=m, replace=False))]
    Rp, Qp = _unit_vectors(alignment, probe)
    center = np.empty(len(genes))
    scale = np.empty(len(genes))
    self_pos = pd.Series(np.arange(m), index=probe)
    for s in range(0, len(genes), 2048):
        g = genes[s:s + 2048]
        Rg, Qg = _unit_vectors(alignment, g)
        D = Qg @ Qp.T - Rg @ Rp.T
        hit = g.isin(probe)
        if hit.any():  # leave out the gene itself
            D[np.nonzero(hit)[0], self_pos.loc[g[hit]].to_numpy()] = np.nan
        med = np.nanmedian(D, axis=1, keepdims=True)
        center[s:s + len(g)] = med[:, 0]
        scale[s:s + len(g)] = 1.4826 * np.nanmedian(np.abs(D - med), axis=1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nanmedian(scale))
    center = np.where(np.isfinite(center), center, 0.0)
    return pd.DataFrame({"center": center, "scale": scale}, index=genes)


def _gene_names(genes) -> pd.Index:
    """Gene names given as one name or a list, as a string Index."""
    return pd.Index([str(g) for g in np.atleast_1d(np.asarray(genes, dtype=object))])


def _focus_genes(alignment: Alignment, genes, n_genes) -> pd.Index:
    """The given genes embedded in both samples plus the ``n_genes`` most shifted ones (shared-gene order)."""
    shared = alignment.shared
    focus = []
    if genes is not None:
        names = _gene_names(genes)
        miss = names[~names.isin(shared)]
        if len(miss) == len(names):
            raise SigelInputError(f"none of `genes` is embedded in both samples (e.g. {list(miss[:5])})")
        if len(miss):
            logger.warning(f"altered_interactions: {len(miss)} of {len(names)} genes not embedded in both "
                           f"samples, skipped (e.g. {', '.join(miss[:5])})")
        focus.extend(names[names.isin(shared)])
    if n_genes is None:
        n_genes = 50 if genes is None else 0
    if n_genes > 0:
        focus.extend(shifted_genes(alignment).index[: int(n_genes)])
    return shared[shared.isin(pd.unique(np.asarray(focus, dtype=object)))]


def _partner_genes(alignment: Alignment, partners) -> pd.Index:
    """The partner genes embedded in both samples (default: every shared gene)."""
    shared = alignment.shared
    if partners is None:
        return shared
    part = shared[shared.isin(_gene_names(partners))]
    if len(part) == 0:
        raise SigelInputError("none of `partners` is embedded in both samples")
    return part


def _pair_cosines(alignment: Alignment, focus: pd.Index, part: pd.Index):
    """Focus x partner pairs, each unordered pair once: (focus index, partner index, cos_reference, cos_query)."""
    Rf, Qf = _unit_vectors(alignment, focus)
    Rp, Qp = _unit_vectors(alignment, part)
    cr = Rf @ Rp.T
    cq = Qf @ Qp.T
    # keep each unordered pair once: drop self pairs, and for focus-focus pairs keep one order
    pos = pd.Series(np.arange(len(alignment.shared)), index=alignment.shared)
    pf = pos.loc[focus].to_numpy()[:, None]
    pp = pos.loc[part].to_numpy()[None, :]
    both = np.isin(part, focus)[None, :]
    valid = (pf != pp) & ~(both & (pp < pf))
    fi, pj = np.nonzero(valid)
    return fi, pj, cr[fi, pj], cq[fi, pj]


def _standardized_changes(alignment: Alignment, standardize: str, focus, part, fi, pj, delta, ni, nj, dnull, *,
                          n_probe: int, seed: int):
    """The tested pairs' and the anchor pairs' cosine changes, scaled as ``standardize`` says."""
    anc = alignment.anchors
    if standardize == "genes":
        need = focus.union(part, sort=False).union(anc, sort=False)
        st = _gene_change_stats(alignment, need, n_probe, np.random.default_rng([seed, 17]))[["center", "scale"]]

        def beyond_genes(d, genes_a, ia, genes_b, ib):  # (d - m_a - m_b) / sqrt(s_a^2 + s_b^2)
            a, b = st.loc[genes_a].to_numpy()[ia], st.loc[genes_b].to_numpy()[ib]
            return (d - a[:, 0] - b[:, 0]) / np.sqrt(a[:, 1] ** 2 + b[:, 1] ** 2)

        return beyond_genes(delta, focus, fi, part, pj), beyond_genes(dnull, anc, ni, anc, nj)
    if standardize == "noise":
        if alignment.noise is None:
            raise SigelInputError("standardize='noise' needs a noise estimate; call "
                                  "align(..., reference_data=adata_ref, query_data=adata_query)")
        nz2 = alignment.noise["total"] ** 2
        na = nz2.reindex(anc).to_numpy()
        xnull = na[ni] + na[nj]
        a_, b_ = _gamma_identity_fit(dnull**2 + 1e-12, xnull)
        x = nz2.reindex(focus).to_numpy()[fi] + nz2.reindex(part).to_numpy()[pj]
        return delta / np.sqrt(a_ * x + b_), dnull / np.sqrt(a_ * xnull + b_)
    return delta, dnull


def _ranked_pairs(alignment: Alignment, ga, gb, cr, cq, delta, z, p) -> pd.DataFrame:
    """The pair table with q-values and contexts, sorted by p (then |score|) and ranked."""
    tab = pd.DataFrame({"gene_a": ga, "gene_b": gb, "cos_reference": cr, "cos_query": cq, "delta": delta,
                        "score": z, "pval": p, "qval": _bh(p)})
    for side, ctx in (("reference", alignment.reference_contexts), ("query", alignment.query_contexts)):
        if ctx is not None:
            tab[f"context_{side}_a"] = ctx.reindex(ga).to_numpy()
            tab[f"context_{side}_b"] = ctx.reindex(gb).to_numpy()
    order = np.lexsort((-np.abs(z), p))
    tab = tab.iloc[order].reset_index(drop=True)
    tab.insert(8, "rank", np.arange(1, len(tab) + 1))
    return tab


def altered_interactions(alignment: Alignment, genes=None, *, n_genes: int | None = None, partners=None,
                         top: int | None = 500, standardize: str = "genes", null: str = "normal",
                         n_probe: int = 500, max_null_pairs: int = 200_000, seed: int | None = None) -> pd.DataFrame:
    """Gene pairs whose relation (cosine similarity) changed between the samples.

    For focus genes x partner genes, the cosine similarity of the two genes'
    vectors is computed in the reference and (after alignment) in the query;
    the change ``delta = cos_query - cos_reference`` is standardised and
    compared with anchor-anchor pairs (held-out aligned anchors), whose
    relations should not change. Pairs are built in one vectorised block
    (focus x partners), never all genes x all genes.

    Parameters
    ----------
    alignment
        The result of :func:`align`.
    genes
        Focus genes (names embedded in both samples). ``None``: the
        ``n_genes`` most shifted genes (:func:`shifted_genes`).
    n_genes
        Number of top shifted genes added to the focus set (default 50 when
        ``genes`` is None, else 0).
    partners
        Genes paired with each focus gene (default: every shared gene).
    top
        Number of ranked pairs returned (``None``: all tested pairs; q-values
        always use all tested pairs).
    standardize
        How a pair's change is scaled before the test. ``'genes'`` (default):
        ``(delta - m_a - m_b) / sqrt(s_a^2 + s_b^2)``, where ``m_g`` and
        ``s_g`` are the median and the robust spread of gene g's cosine
        changes against ``n_probe`` random shared genes -- a pair is altered
        when its relation changed beyond what its two genes' overall
        movement or noise explains (this also removes the bias of focus
        genes chosen for having moved). ``'noise'``: by the change
        expected from the two genes' split-half noise
        (``a * (noise_a^2 + noise_b^2) + b``, fitted on the anchor pairs;
        needs ``align(..., reference_data=, query_data=)``). ``'noise'`` ranks
        planted changes better on synthetic sections but is even less
        calibrated on real ones: on adjacent DLPFC sections (a null) an early
        model called 45 % of pairs altered with it, against about 1 % with
        ``'genes'``. ``'auto'``: ``'noise'`` when noise estimates exist, else
        ``'genes'``. ``'none'``: the raw change.

        **Read the ranking, not the q-values, on real sections.** On adjacent
        DLPFC sections, where no pair is altered, ``'genes'`` has called 5-17 %
        of the pairs of the 50 most shifted genes altered at q < 0.05,
        depending on the fit (17 % with the current default model,
        ``temperature=0.1``; benchmarks/RESULTS.md). The genes that moved most
        change some of their relations far more than a normal null allows,
        even after their overall movement is removed.
    null
        ``'normal'``: a normal null with the anchor pairs' median and MAD
        (two-sided); ``'empirical'``: the fraction of anchor pairs with a
        change at least as large.
    n_probe
        Probe genes per gene for ``standardize='genes'``.
    max_null_pairs
        Anchor pairs used for the null (a random subset beyond this).
    seed
        Seeds the probe genes and the subset of null pairs.

    Returns
    -------
    pandas.DataFrame
        One row per pair (index ``'geneA|geneB'``), sorted by rank:
        ``gene_a``, ``gene_b``, ``cos_reference``, ``cos_query``, ``delta``,
        ``score`` (standardised change), ``pval``, ``qval``, ``rank`` and,
        when available, ``context_reference_a/b`` and ``context_query_a/b``.
        ``attrs['n_tested']`` is the number of tested pairs.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(100)]
    >>> ref = pd.DataFrame(rng.normal(size=(100, 8)), index=genes)
    >>> qry = ref + rng.normal(scale=0.1, size=ref.shape)
    >>> qry.iloc[0] = ref.iloc[1]                       # g0 now looks like g1
    >>> al = sigel.tl.align(ref, qry, anchors=genes[50:])
    >>> pairs = sigel.tl.altered_interactions(al, ["g0"], top=5)
    >>> "g1" in set(pairs[["gene_a", "gene_b"]].to_numpy().ravel())
    True
    """
    _check_alignment(alignment)
    assert_one_of("standardize", standardize, ("auto", "genes", "noise", "none"))
    if standardize == "auto":
        standardize = "noise" if alignment.noise is not None else "genes"
    assert_one_of("null", null, ("normal", "empirical"))
    assert_positive("max_null_pairs", max_null_pairs)
    assert_positive("n_probe", n_probe)
    seed = settings.seed if seed is None else int(seed)
    focus = _focus_genes(alignment, genes, n_genes)
    part = _partner_genes(alignment, partners)
    if len(focus) == 0 or (len(part) < 2 and len(focus) < 2):
        raise SigelInputError("need at least one focus gene and one other partner gene")
    fi, pj, cr, cq = _pair_cosines(alignment, focus, part)
    delta = cq - cr
    rng = np.random.default_rng([seed, 11])
    ni, nj, dnull = _pair_null(alignment, int(max_null_pairs), rng)
    t, tnull = _standardized_changes(alignment, standardize, focus, part, fi, pj, delta, ni, nj, dnull,
                                     n_probe=int(n_probe), seed=seed)
    loc, sc = _robust_loc_scale(tnull)
    z = (t - loc) / sc
    if null == "normal":
        from scipy.stats import norm

        p = np.minimum(2 * norm.sf(np.abs(z)), 1.0)
    else:
        p = _empirical_pvalues(np.abs(tnull - loc), np.abs(t - loc))
    tab = _ranked_pairs(alignment, focus.to_numpy()[fi], part.to_numpy()[pj], cr, cq, delta, z, p)
    n_tested = len(tab)
    n_sig = int((tab["qval"] < 0.05).sum())
    if top is not None:
        assert_positive("top", top)
        tab = tab.iloc[: int(top)]
    tab.index = pd.Index(tab["gene_a"].astype(str) + "|" + tab["gene_b"].astype(str), name="pair")
    tab.attrs.update(n_tested=int(n_tested), n_significant=n_sig, n_focus=int(len(focus)),
                     n_partners=int(len(part)), null=null, standardize=standardize, null_location=loc,
                     null_scale=sc, n_null_pairs=int(len(dnull)))
    logger.info(f"altered_interactions: {n_tested:,} pairs ({len(focus)} focus x {len(part):,} partner genes), "
                f"{n_sig:,} altered at q < 0.05 (null from {len(dnull):,} anchor pairs)")
    return tab


def interaction_modules(pairs: pd.DataFrame, *, side: str = "reference", alpha: float = 0.05) -> pd.DataFrame:
    """Which contexts the altered pairs fall in: a context-pair summary.

    Parameters
    ----------
    pairs
        A table from :func:`altered_interactions` (inputs with contexts, i.e.
        fitted models or AnnData objects with memberships).
    side
        Contexts of the ``'reference'`` or the ``'query'`` model.
    alpha
        q-value cut-off for a pair to count as altered.

    Returns
    -------
    pandas.DataFrame
        One row per unordered context pair (index ``'ctxA|ctxB'``):
        ``context_a``, ``context_b``, ``n_pairs`` (altered pairs), ``n_gained``
        (more similar in the query), ``n_lost``, ``mean_delta``, ``n_genes``
        (distinct genes involved), sorted by ``n_pairs``.

    Examples
    --------
    >>> import pandas as pd, sigel
    >>> pairs = pd.DataFrame({"gene_a": ["a", "a"], "gene_b": ["b", "c"], "delta": [0.5, -0.4],
    ...                       "qval": [0.01, 0.02], "context_reference_a": ["context_0", "context_0"],
    ...                       "context_reference_b": ["context_1", "context_1"]})
    >>> sigel.tl.interaction_modules(pairs)["n_pairs"].tolist()
    [2]
    """
    assert_one_of("side", side, ("reference", "query"))
    ca, cb = f"context_{side}_a", f"context_{side}_b"
    if ca not in pairs or cb not in pairs:
        raise SigelInputError(
            f"`pairs` has no {ca!r}/{cb!r} columns; align fitted models (or AnnData with memberships) "
            "so that genes carry contexts"
        )
    sig = pairs[pairs["qval"] < alpha]
    cols = ["context_a", "context_b", "n_pairs", "n_gained", "n_lost", "mean_delta", "n_genes"]
    if sig.empty:
        return pd.DataFrame(columns=cols)
    a = sig[ca].astype(str).to_numpy()
    b = sig[cb].astype(str).to_numpy()
    lo, hi = np.where(a <= b, a, b), np.where(a <= b, b, a)
    df = pd.DataFrame({"context_a": lo, "context_b": hi, "delta": sig["delta"].to_numpy(),
                       "gene_a": sig["gene_a"].to_numpy(), "gene_b": sig["gene_b"].to_numpy()})
    g = df.groupby(["context_a", "context_b"], sort=False)
    out = g.agg(n_pairs=("delta", "size"), n_gained=("delta", lambda d: int((d > 0).sum())),
                n_lost=("delta", lambda d: int((d < 0).sum())), mean_delta=("delta", "mean")).reset_index()
    long = pd.concat([df[["context_a", "context_b", "gene_a"]].rename(columns={"gene_a": "g"}),
                      df[["context_a", "context_b", "gene_b"]].rename(columns={"gene_b": "g"})])
    ng = long.groupby(["context_a", "context_b"])["g"].nunique()
    out["n_genes"] = ng.reindex(pd.MultiIndex.from_frame(out[["context_a", "context_b"]])).to_numpy()
    out = out.sort_values(["n_pairs", "mean_delta"], ascending=[False, False], key=None).reset_index(drop=True)
    out.index = pd.Index(out["context_a"] + "|" + out["context_b"], name="contexts")
    return out[cols]
