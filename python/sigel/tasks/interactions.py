"""Gene-gene interaction prediction from the gene vectors.

Each pair (a, b) becomes a symmetric feature vector built from the two genes'
(unit-length) embeddings, e.g. ``[u * v, |u - v|]``; a logistic regression or
a small MLP (scikit-learn) learns labelled pairs. Quality is the stratified
cross-validated AUROC / AUPRC (and on a held-out pair set when given), next
to the same pipeline on random vectors of the same dimension (seeded): a
representation that knows nothing about the genes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._settings import logger, settings
from .._validate import SigelInputError, assert_one_of
from ._genes import GeneMapper, embedding_frame, report_unmapped, symbol_series, unit_rows

FEATURES = ("product_absdiff", "sum_product", "product")
CLASSIFIERS = ("logistic", "mlp")


# ------------------------------------------------------------------ inputs
def _read_pairs(pairs, labels=None):
    """(a names, b names, labels or None) from a DataFrame / (n, 2) array / list of tuples."""
    lab = None
    if isinstance(pairs, pd.DataFrame):
        if pairs.shape[1] < 2:
            raise SigelInputError(f"`pairs` must have 2 gene columns; got {pairs.shape[1]} columns")
        a = pairs.iloc[:, 0].astype(str).to_numpy(dtype=object)
        b = pairs.iloc[:, 1].astype(str).to_numpy(dtype=object)
        if labels is None and "label" in pairs.columns:
            lab = pairs["label"].to_numpy()
    else:
        arr = np.asarray(list(pairs) if not isinstance(pairs, np.ndarray) else pairs, dtype=object)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise SigelInputError(f"`pairs` must be n x 2 (gene a, gene b); got shape {arr.shape}")
        a = np.array([str(x) for x in arr[:, 0]], dtype=object)
        b = np.array([str(x) for x in arr[:, 1]], dtype=object)
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or len(lab) != len(a):
            raise SigelInputError(f"`labels` must have one entry per pair ({len(a)}); got shape {lab.shape}")
    if lab is not None:
        try:
            lab = lab.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise SigelInputError(f"`labels` must be 0/1 (or boolean): {e}") from e
        if not np.all(np.isin(lab, (0.0, 1.0))):
            raise SigelInputError(f"`labels` must be 0/1; got values {np.unique(lab)[:5].tolist()}")
        lab = lab.astype(np.int64)
    return a, b, lab


def _map_pairs(mapper: GeneMapper, a, b, what: str):
    """Embedded ids for both columns; keep pairs whose genes are both embedded and distinct."""
    ia, ib = mapper.to_ids(a), mapper.to_ids(b)
    ok = ~(pd.isna(ia) | pd.isna(ib))
    names = pd.Index(pd.unique(np.concatenate([a, b])))
    unmapped = names[pd.isna(mapper.to_ids(names.to_numpy()))] if len(names) else names
    report_unmapped(what, len(unmapped), len(names), unmapped[:5])
    same = np.zeros_like(ok)
    same[ok] = ia[ok] == ib[ok]
    ok &= ~same
    return ia, ib, ok, int(len(unmapped)), int(len(names))


def pair_features(U: np.ndarray, V: np.ndarray, kind: str = "product_absdiff") -> np.ndarray:
    """Symmetric features of gene pairs from their vectors (rows of ``U`` and ``V``).

    ``'product_absdiff'``: ``[u * v, |u - v|]``; ``'sum_product'``: ``[u + v,
    u * v]``; ``'product'``: ``u * v``. All are invariant to swapping a and b.
    """
    if kind == "product_absdiff":
        return np.hstack([U * V, np.abs(U - V)])
    if kind == "sum_product":
        return np.hstack([U + V, U * V])
    if kind == "product":
        return U * V
    raise SigelInputError(f"`features` must be one of {FEATURES}; got {kind!r}")


def _gene_vectors(X: np.ndarray, normalize: bool) -> np.ndarray:
    """The gene vectors, scaled to unit length when ``normalize``."""
    return unit_rows(X) if normalize else X


def _features_of(X: np.ndarray, index: pd.Index, ia, ib, kind: str) -> np.ndarray:
    """Pair features of the genes named ``ia`` and ``ib`` (rows of ``X`` in ``index`` order)."""
    return pair_features(X[index.get_indexer(ia)], X[index.get_indexer(ib)], kind)


def _labelled_pairs(model, pairs, labels, gene_symbols, adata, what: str):
    """``(emb, mapper, ids_a, ids_b, labels, n_pairs_input, n_genes_unmapped)`` of the usable labelled pairs."""
    emb = embedding_frame(model)
    mapper = GeneMapper(emb.index, symbol_series(gene_symbols, emb.index, adata=adata, model=model))
    a, b, y = _read_pairs(pairs, labels)
    if y is None:
        raise SigelInputError("labels are required (a `labels` argument or a 'label' column in `pairs`)")
    ia, ib, ok, n_unm, _ = _map_pairs(mapper, a, b, what)
    return emb, mapper, ia[ok], ib[ok], y[ok], len(a), n_unm


def _make_classifier(name: str, seed: int, n: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        clf = LogisticRegression(max_iter=2000, C=1.0)
    elif name == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=300, learning_rate_init=1e-3,
                            early_stopping=n >= 200, n_iter_no_change=10, random_state=int(seed))
    else:
        raise SigelInputError(f"`classifier` must be one of {CLASSIFIERS}; got {name!r}")
    return make_pipeline(StandardScaler(), clf)


def _one_blas_thread():
    """Single-threaded BLAS/OpenMP for the many small dense fits (threads only contend here)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def random_vectors(genes, dim: int, seed: int = 0) -> pd.DataFrame:
    """Random Gaussian vectors (genes x ``dim``), seeded: the control representation."""
    rng = np.random.default_rng([int(seed), 7])
    return pd.DataFrame(rng.standard_normal((len(genes), int(dim))), index=pd.Index(genes))


# --------------------------------------------------------------- predictor
class InteractionPredictor:
    """A classifier of gene pairs fitted on embeddings (from `fit_interactions`).

    Attributes
    ----------
    classifier, features
        Classifier name and pair-feature kind.
    n_pairs
        Number of labelled pairs it was fitted on.
    estimator
        The fitted scikit-learn pipeline (scaler + classifier).
    """

    def __init__(self, emb: pd.DataFrame, mapper: GeneMapper, estimator, classifier: str, features: str,
                 normalize: bool, n_pairs: int):
        self._emb, self._mapper, self.estimator = emb, mapper, estimator
        self.classifier, self.features, self.normalize, self.n_pairs = classifier, features, normalize, n_pairs
        self._X = _gene_vectors(emb.to_numpy(np.float64), normalize)

    def __repr__(self) -> str:
        return (f"InteractionPredictor({self.classifier}, features={self.features!r}, "
                f"{self._emb.shape[0]} genes x {self._emb.shape[1]} dims, fitted on {self.n_pairs} pairs)")

    def _scores(self, ia, ib) -> np.ndarray:
        F = _features_of(self._X, self._emb.index, ia, ib, self.features)
        with _one_blas_thread():
            return self.estimator.predict_proba(F)[:, 1]

    def predict(self, pairs) -> pd.DataFrame:
        """Predicted interaction probability of new pairs.

        Parameters
        ----------
        pairs
            DataFrame (first two columns = genes), an n x 2 array or a list of
            (gene a, gene b) tuples; ids or symbols (when the predictor was
            fitted with ``gene_symbols``).

        Returns
        -------
        pandas.DataFrame
            ``gene_a``, ``gene_b`` (as given), ``score`` in [0, 1]; NaN where a
            gene is not embedded (or a == b).
        """
        a, b, _ = _read_pairs(pairs)
        ia, ib, ok, _, _ = _map_pairs(self._mapper, a, b, "predict")
        score = np.full(len(a), np.nan)
        if ok.any():
            score[ok] = self._scores(ia[ok], ib[ok])
        return pd.DataFrame({"gene_a": a, "gene_b": b, "score": score})

    def strength(self, genes) -> pd.DataFrame:
        """Predicted interaction strength among ``genes`` (square, symmetric; NaN diagonal).

        Parameters
        ----------
        genes
            Gene names (ids or symbols); names that are not embedded are
            dropped with a warning.

        Returns
        -------
        pandas.DataFrame
            Genes x genes matrix of scores, labelled with the names as given.
        """
        names = np.array([str(g) for g in np.atleast_1d(np.asarray(genes, dtype=object))], dtype=object)
        ids = self._mapper.to_ids(names)
        ok = ~pd.isna(ids)
        report_unmapped("interaction strength", int((~ok).sum()), len(names), names[~ok])
        names, ids = names[ok], ids[ok]
        n = len(ids)
        if n < 2:
            raise SigelInputError("need at least 2 embedded genes for an interaction matrix")
        iu, ju = np.triu_indices(n, 1)
        M = np.full((n, n), np.nan)
        s = self._scores(ids[iu], ids[ju])
        M[iu, ju] = s
        M[ju, iu] = s
        return pd.DataFrame(M, index=pd.Index(names), columns=pd.Index(names))


def fit_interactions(model, pairs, labels=None, *, classifier: str = "logistic",
                     features: str = "product_absdiff", normalize: bool = True, gene_symbols=None, adata=None,
                     seed: int = 0) -> InteractionPredictor:
    """Fit an interaction classifier on labelled gene pairs (all of them).

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`, an AnnData with ``varm['sigel']`` or a genes x
        D embedding DataFrame.
    pairs, labels
        Labelled pairs: a DataFrame whose first two columns are genes (and a
        ``label`` column when ``labels`` is None), an n x 2 array or a list of
        tuples, with 0/1 ``labels``. Pairs with a gene that is not embedded
        are dropped (the count is logged).
    classifier
        ``'logistic'`` or ``'mlp'`` (one hidden layer of 64 units).
    features
        Pair features: ``'product_absdiff'`` (``[u*v, |u-v|]``),
        ``'sum_product'`` (``[u+v, u*v]``) or ``'product'``.
    normalize
        Scale each gene vector to unit length first (cosine geometry).
    gene_symbols, adata
        Identifier mapping, as in `neighbors`.
    seed
        Seed of the MLP initialisation.

    Returns
    -------
    InteractionPredictor
        With ``.predict(pairs)`` and ``.strength(genes)``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> emb = pd.DataFrame(rng.normal(size=(30, 4)), index=[f"g{i}" for i in range(30)])
    >>> pairs = [(f"g{i}", f"g{(i * 7 + 3) % 30}") for i in range(30)]
    >>> labels = [i % 2 for i in range(30)]
    >>> pred = sigel.tl.fit_interactions(emb, pairs, labels)
    >>> pred.predict([("g1", "g2")])["score"].between(0, 1).all()
    True
    """
    assert_one_of("classifier", classifier, CLASSIFIERS)
    assert_one_of("features", features, FEATURES)
    emb, mapper, ia, ib, y, _, _ = _labelled_pairs(model, pairs, labels, gene_symbols, adata, "fit_interactions")
    if len(np.unique(y)) < 2:
        raise SigelInputError("the usable pairs must include both labels 0 and 1")
    X = _gene_vectors(emb.to_numpy(np.float64), normalize)
    F = _features_of(X, emb.index, ia, ib, features)
    with _one_blas_thread():
        est = _make_classifier(classifier, seed, len(y)).fit(F, y)
    return InteractionPredictor(emb, mapper, est, classifier, features, normalize, int(len(y)))


# --------------------------------------------------------------- evaluation
def interactions(model, pairs, labels=None, *, classifiers=CLASSIFIERS, features: str = "product_absdiff",
                 n_splits: int = 5, control: bool = True, test_pairs=None, test_labels=None,
                 normalize: bool = True, gene_symbols=None, adata=None, seed: int = 0,
                 progress: bool | None = None) -> pd.DataFrame:
    """How well the gene vectors predict gene-gene interactions (vs. random vectors).

    Builds symmetric pair features from the vectors, then for each classifier
    reports the stratified ``n_splits``-fold cross-validated AUROC and AUPRC
    on the labelled pairs and, when ``test_pairs`` are given, the scores on
    them of a classifier fitted on all labelled pairs. With ``control=True``
    the same is done with random vectors of equal dimension (one per gene,
    seeded), so the table shows what the representation adds.

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`, an AnnData with ``varm['sigel']`` or a genes x
        D embedding DataFrame (e.g. a baseline such as PCA loadings).
    pairs, labels
        Labelled pairs: a DataFrame whose first two columns are genes (and a
        ``label`` column when ``labels`` is None), an n x 2 array or a list of
        tuples, with 0/1 labels. Pairs with a gene that is not embedded (or
        a == b) are dropped; the counts are in ``attrs``.
    classifiers
        Any of ``'logistic'`` and ``'mlp'``.
    features
        Pair features (see `fit_interactions`).
    n_splits
        Cross-validation folds (``0`` skips cross-validation, e.g. when
        only ``test_pairs`` matter).
    control
        Also evaluate random vectors of the same dimension.
    test_pairs, test_labels
        Optional held-out labelled pairs (same formats).
    normalize
        Scale gene vectors to unit length before building features.
    gene_symbols, adata
        Identifier mapping, as in `neighbors`.
    seed
        Seeds the folds, the MLP and the random vectors.
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per (embedding, classifier, split): ``embedding``
        (``'sigel'`` — the given vectors — or ``'random'``), ``classifier``,
        ``split`` (``'cv'`` or ``'test'``), ``auroc``, ``auprc`` (fold means
        for ``'cv'``), ``auroc_sd``, ``auprc_sd`` (across folds), ``n_pairs``,
        ``n_positive``. ``attrs``: ``n_pairs_input``, ``n_pairs_used``,
        ``n_genes_unmapped`` (distinct gene names matching no embedded gene),
        ``n_test_pairs_used``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> fam = np.repeat([0, 1, 2], 20)
    >>> emb = pd.DataFrame(rng.normal(size=(3, 6))[fam] + 0.3 * rng.normal(size=(60, 6)),
    ...                    index=[f"g{i}" for i in range(60)])
    >>> i, j = np.triu_indices(60, 1)
    >>> pairs = pd.DataFrame({"a": emb.index[i], "b": emb.index[j], "label": (fam[i] == fam[j]).astype(int)})
    >>> tab = sigel.tl.interactions(emb, pairs.sample(400, random_state=0), classifiers=["logistic"])
    >>> tab.set_index("embedding").loc["sigel", "auroc"] > 0.9
    True
    """
    classifiers = [classifiers] if isinstance(classifiers, str) else list(classifiers)
    if not classifiers:
        raise SigelInputError("`classifiers` is empty")
    for c in classifiers:
        assert_one_of("classifiers", c, CLASSIFIERS)
    assert_one_of("features", features, FEATURES)
    if n_splits not in (0,) and n_splits < 2:
        raise SigelInputError(f"n_splits must be 0 (no cross-validation) or >= 2; got {n_splits}")
    emb, mapper, ia, ib, y, n_input, n_unm = _labelled_pairs(model, pairs, labels, gene_symbols, adata,
                                                             "interactions")
    if len(np.unique(y)) < 2 or min(np.bincount(y, minlength=2)) < max(n_splits, 1):
        raise SigelInputError(
            f"need both labels among the usable pairs, at least n_splits={n_splits} of each; got "
            f"{int((y == 1).sum())} positive and {int((y == 0).sum())} negative of {len(y)} usable pairs"
        )
    test = None
    if test_pairs is not None:
        ta, tb, ty = _read_pairs(test_pairs, test_labels)
        if ty is None:
            raise SigelInputError("test_pairs need labels (`test_labels` or a 'label' column)")
        tia, tib, tok, _, _ = _map_pairs(mapper, ta, tb, "interactions (test pairs)")
        test = (tia[tok], tib[tok], ty[tok])
        if len(np.unique(test[2])) < 2:
            raise SigelInputError("the usable test pairs must include both labels")

    reps = {"sigel": emb.to_numpy(np.float64)}
    if control:
        reps["random"] = random_vectors(emb.index, emb.shape[1], seed).to_numpy()
    gi_a, gi_b = emb.index.get_indexer(ia), emb.index.get_indexer(ib)
    jobs = [(r, c) for r in reps for c in classifiers]
    with _one_blas_thread():
        rows = _evaluate(jobs, reps, features, normalize, gi_a, gi_b, y, n_splits, seed, test, emb,
                         progress)
    out = pd.DataFrame(rows)
    out.attrs.update(n_pairs_input=int(n_input), n_pairs_used=int(len(y)), n_genes_unmapped=n_unm,
                     n_test_pairs_used=int(len(test[2])) if test is not None else 0)
    logger.info("interactions: " + "; ".join(f"{r.embedding}/{r.classifier}/{r.split} AUROC {r.auroc:.3f}"
                                              for r in out.itertuples()))
    return out


def _evaluate(jobs, reps, features, normalize, gi_a, gi_b, y, n_splits, seed, test, emb, progress):
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    rows = []
    for rep, clf in tqdm(jobs, disable=not settings.show_progress(progress), desc="interactions"):
        X = _gene_vectors(reps[rep], normalize)
        F = pair_features(X[gi_a], X[gi_b], features)
        if n_splits:
            skf = StratifiedKFold(n_splits=int(n_splits), shuffle=True, random_state=int(seed))
            au, ap = [], []
            for tr, te in skf.split(F, y):
                est = _make_classifier(clf, seed, len(tr)).fit(F[tr], y[tr])
                s = est.predict_proba(F[te])[:, 1]
                au.append(roc_auc_score(y[te], s))
                ap.append(average_precision_score(y[te], s))
            rows.append(dict(embedding=rep, classifier=clf, split="cv", auroc=float(np.mean(au)),
                             auprc=float(np.mean(ap)), auroc_sd=float(np.std(au, ddof=1)),
                             auprc_sd=float(np.std(ap, ddof=1)), n_pairs=int(len(y)), n_positive=int(y.sum())))
        if test is not None:
            est = _make_classifier(clf, seed, len(y)).fit(F, y)
            Ft = _features_of(X, emb.index, test[0], test[1], features)
            s = est.predict_proba(Ft)[:, 1]
            rows.append(dict(embedding=rep, classifier=clf, split="test", auroc=float(roc_auc_score(test[2], s)),
                             auprc=float(average_precision_score(test[2], s)), auroc_sd=np.nan, auprc_sd=np.nan,
                             n_pairs=int(len(test[2])), n_positive=int(test[2].sum())))
    return rows
