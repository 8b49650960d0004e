"""Gene pruning with the embedding and SpaGCN spatial domains."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sigel
from sigel import SigelInputError
from sigel.tasks import domains as D


# ------------------------------------------------------------------ fixtures
def _planted_domains(seed=0, shape=(20, 20), n_mark=3, n_copies=60, n_grad_copies=60, n_noise=150):
    """4 horizontal-band domains (obs['domain']) with 3 marker genes each, one marker copied
    60 times, a non-domain gradient gene copied 60 times, and 150 pattern-free genes.

    Spots have no library-size variation, so ``obs['libsize']`` is constant.
    """
    base = sigel.datasets.synthetic_tissue(10, shape=shape, geometry="grid", seed=seed)
    rng = np.random.default_rng(seed)
    u, v, n = base.obs["u"].to_numpy(), base.obs["v"].to_numpy(), base.n_obs

    def band(d):
        lo, hi = d / 4, (d + 1) / 4
        return 1 / (1 + np.exp(-(v - lo) / 0.02)) / (1 + np.exp((v - hi) / 0.02))

    pats = [band(d) for d in range(4) for _ in range(n_mark)] + [u] + [np.full(n, 0.35)] * n_noise
    names = [f"mark{d}_{j}" for d in range(4) for j in range(n_mark)] + ["grad"] + \
        [f"noise_{j}" for j in range(n_noise)]
    P = np.array(pats)
    level = np.exp(rng.normal(np.log(3), 0.5, size=len(P)))
    mu = level[:, None] * (1 + 5 * P) / (1 + 5 * 0.35) * np.exp(rng.normal(0, 0.3, size=P.shape))
    X = rng.negative_binomial(5, 5 / (5 + mu)).T.astype(np.float32)
    i0, ig = names.index("mark0_0"), names.index("grad")
    X = np.hstack([X, np.repeat(X[:, [i0]], n_copies, 1), np.repeat(X[:, [ig]], n_grad_copies, 1)])
    names += [f"copy0_{j}" for j in range(n_copies)] + [f"gradcopy_{j}" for j in range(n_grad_copies)]
    adata = ad.AnnData(sp.csr_matrix(X), obs=base.obs.copy())
    adata.var_names = names
    adata.obs["libsize"] = 1.0
    adata.obsm["spatial"] = base.obsm["spatial"]
    return adata


@pytest.fixture(scope="module")
def planted():
    return _planted_domains()


def _tiny_fit(adata, seed):
    return sigel.SIGEL(epochs=4, pretrain_epochs=2, embed_dim=8, width=16, depth=1, n_heads=2,
                       decoder_width=8).fit(adata, seed=seed, n_threads=1, library_size_key="libsize")


@pytest.fixture(scope="module")
def model(planted):
    return _tiny_fit(planted, 0)


# ----------------------------------------------------------------- Moran's I
def test_morans_i_matches_dense_formula_and_is_calibrated():
    adata = sigel.datasets.synthetic_tissue(60, shape=(14, 14), geometry="visium", seed=3)
    tab = D.morans_i_table(adata)
    assert list(tab.columns) == ["score", "zscore", "pval", "qval"]
    assert tab["score"].is_monotonic_decreasing
    X = D._log_normalized(adata).toarray()
    W = D._knn_weights(D._coordinates(adata, "spatial"), 6).toarray()
    Z = X - X.mean(0)
    ref = X.shape[0] / W.sum() * np.einsum("ig,ij,jg->g", Z, W, Z) / (Z ** 2).sum(0)
    np.testing.assert_allclose(tab.loc[adata.var_names, "score"], ref, rtol=1e-5, atol=1e-6)
    fam = adata.var.loc[tab.index, "family"].astype(str).to_numpy()
    assert tab.loc[fam != "none", "score"].median() > 0.2
    # pattern-free genes: Moran's I close to 0, few small q-values
    assert abs(tab.loc[fam == "none", "score"].mean()) < 0.1
    # a permutation null agrees with the randomisation variance
    rng = np.random.default_rng(0)
    x = X[:, 0]
    perm = [(lambda z: z @ W @ z / (z @ z))(rng.permutation(x) - x.mean()) for _ in range(400)]
    I0, z0, _ = D._morans_i_core(sp.csr_matrix(X[:, [0]]), sp.csr_matrix(W))
    sd = (I0[0] + 1 / (X.shape[0] - 1)) / z0[0]
    assert 0.8 < sd / np.std(perm) < 1.25


# ------------------------------------------------------------------ grouping
def test_threshold_groups_single_and_average():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6)) * 3
    E = np.vstack([c + 0.01 * rng.normal(size=(5, 6)) for c in centers])
    for linkage in ("single", "average", "complete"):
        lab = D._threshold_groups(E, 0.95, linkage, center=False)
        assert len(np.unique(lab)) == 3
        assert all(len(np.unique(lab[i * 5:(i + 1) * 5])) == 1 for i in range(3))


# --------------------------------------------------------------- prune_genes
def test_prune_genes_table_and_writes(planted, model):
    adata = planted.copy()
    sel = sigel.tl.prune_genes(model, adata, keep=1, score="morans_i", group_by="contexts", drop="genes")
    assert isinstance(sel, pd.DataFrame) and sel.index.name == "gene"
    assert list(sel.columns) == ["group", "score", "qval", "rank", "group_size"]
    assert (sel["rank"] == 1).all() and not sel["group"].duplicated().any()
    ctx = model.contexts_["context"]
    assert (ctx.loc[sel.index].to_numpy() == sel["group"].to_numpy()).all()
    # each kept gene is its context's best-scoring gene with signal
    tab = D.morans_i_table(adata, library_size_key="libsize")
    for g, row in sel.iterrows():
        members = ctx.index[ctx == row["group"]]
        sig = tab.loc[members][tab.loc[members, "qval"] < 0.05]
        assert g == sig["score"].idxmax()
    # pattern-free genes never make it (no spatial signal)
    assert sel.index.str.startswith("noise").sum() <= 2
    assert adata.var["sigel_pruned"].sum() == len(sel)
    assert set(adata.var_names[adata.var["sigel_pruned"]]) == set(sel.index)
    assert adata.uns["sigel_pruned"]["n_selected"] == len(sel)
    assert "sigel_pruned_group" in adata.var and "sigel_pruned_score" in adata.var
    # drop='groups' (default) keeps the best gene of every group with signal, signal or not
    per_group = D.prune_genes(model, adata, keep=1, score="morans_i")
    assert len(per_group) >= len(sel) and not per_group["group"].duplicated().any()
    assert (sel["qval"] < 0.05).all()
    # fractions keep more; a given grouping and score are honoured; (adata, model) order tolerated
    frac = D.prune_genes(adata, model, keep=0.5, score="morans_i", drop="genes")
    assert len(frac) >= len(sel)
    groups = pd.Series(np.where(adata.var_names.str.startswith("copy0"), "A", "B"), index=adata.var_names)
    score = pd.Series(np.arange(adata.n_vars, dtype=float), index=adata.var_names)
    given = D.prune_genes(model, adata, keep=2, score=score, group_by=groups)
    assert set(given.index) == {"copy0_59", "copy0_58", "gradcopy_59", "gradcopy_58"}


def test_prune_genes_validates(planted, model):
    with pytest.raises(SigelInputError, match="keep"):
        D.prune_genes(model, planted, keep=1.5)
    with pytest.raises(SigelInputError, match="keep"):
        D.prune_genes(model, planted, keep=0)
    with pytest.raises(SigelInputError, match="group_by"):
        D.prune_genes(model, planted, group_by="kmeans", score="morans_i")
    with pytest.raises(SigelInputError, match="contexts"):
        D.prune_genes(model.embeddings_, planted, group_by="contexts", score="morans_i")
    with pytest.raises(SigelInputError, match="fit"):
        D.prune_genes(sigel.SIGEL(), planted)


# ------------------------------------------------------ SpaGCN and acceptance
def test_refine_matches_spagcn():
    spg = D._import_spagcn()
    adata = sigel.datasets.synthetic_tissue(10, shape=(12, 12), geometry="grid", seed=0)
    coords = D._coordinates(adata, "spatial")
    rng = np.random.default_rng(0)
    lab = np.where(adata.obs["v"].to_numpy() > 0.5, rng.integers(0, 3, adata.n_obs), 0)
    from scipy.spatial.distance import cdist

    with D._quiet():
        ref = np.asarray(spg.refine(list(adata.obs_names), list(lab), cdist(coords, coords), shape="square"))
    ours = D._refine_labels(lab, coords, 4)
    assert (ours != lab).any()
    assert np.mean(ours == ref) > 0.97  # differences only from ties among equidistant neighbours


def test_pruned_genes_beat_all_genes(planted, model):
    """Acceptance: on planted domains with redundant copies and noise genes, SpaGCN on the
    pruned genes recovers the domains better (ARI) than on all genes.

    The pruned sets of different fits of this 4-epoch, 8-d model differ by a few
    genes (about 50 kept: the markers, 12 gradient copies, 10 marker copies and 13-18
    noise genes), and SpaGCN on so few genes turns that into refined ARIs from 0.2 to
    0.95 (seeds 0-4 at the default temperature: 0.22, 0.55, 0.91, 0.94, 0.71). So the
    procedure is judged on the median over five fits, not on one seed's luck."""
    adata = planted.copy()
    truth = adata.obs["domain"]
    # near-duplicate grouping by a similarity threshold keeps one gene per block of copies
    thr = sigel.tl.prune_genes(model, adata, keep=1, score="morans_i", group_by="threshold", threshold=0.9)
    assert thr.index.str.startswith("copy0").sum() <= 1 and thr.index.str.startswith("gradcopy").sum() <= 1
    kw = dict(n_domains=4, seed=0, library_size_key="libsize", n_threads=1)
    all_genes = sigel.tl.spatial_domains(adata, **kw)
    s_all = sigel.tl.domain_scores(all_genes, truth)
    noise = adata.var_names.str.startswith("noise")
    refined, raw, runs = [], [], []
    for seed in range(5):
        m = model if seed == 0 else _tiny_fit(planted, seed)
        a = planted.copy()
        # the model's contexts, top 20 % of each by Moran's I
        sel = sigel.tl.prune_genes(m, a, keep=0.2, score="morans_i")
        assert len(sel) < 0.25 * a.n_vars
        assert sel.index.str.startswith("noise").mean() < noise.mean()
        pruned = sigel.tl.spatial_domains(a, sel, **kw)
        s_pr = sigel.tl.domain_scores(pruned, truth)
        refined.append(s_pr.loc["domain_refined", "ari"])
        raw.append(s_pr.loc["domain", "ari"])
        runs.append((a, sel, pruned))
    assert np.median(refined) > s_all.loc["domain_refined", "ari"] + 0.2
    assert np.median(raw) > s_all.loc["domain", "ari"]
    assert np.median(refined) > 0.5
    # output and AnnData writes (seed 0's run)
    a0, sel0, pruned0 = runs[0]
    assert list(pruned0.columns) == ["domain", "domain_refined"] and pruned0.index.equals(a0.obs_names)
    assert pruned0["domain"].nunique() == 4
    assert (a0.obs["sigel_domain_refined"].astype(str).to_numpy()
            == pruned0["domain_refined"].astype(str).to_numpy()).all()
    assert a0.uns["sigel_domain"]["n_genes"] == len(sel0)
    # same seed -> same labels
    again = sigel.tl.spatial_domains(a0, sel0, **kw)
    pd.testing.assert_frame_equal(again, pruned0)


def test_spatial_domains_validates(planted):
    with pytest.raises(SigelInputError, match="n_domains"):
        D.spatial_domains(planted, n_domains=1)
    with pytest.raises(SigelInputError, match="method"):
        D.spatial_domains(planted, method="bayesspace")
    with pytest.raises(SigelInputError, match="not in adata.var_names"):
        D.spatial_domains(planted, ["nope", "mark0_0"])
    with pytest.raises(SigelInputError, match="at least 2"):
        D.spatial_domains(planted, ["mark0_0"])


# -------------------------------------------------------------- domain_scores
def test_domain_scores_ignores_na_and_aligns():
    truth = pd.Series(["a", "a", "b", "b", None], index=list("vwxyz"))
    perfect = pd.Series([1, 1, 2, 2, 3], index=list("vwxyz"), name="pred")
    out = D.domain_scores(perfect, truth)
    assert out.loc["pred", "ari"] == pytest.approx(1.0) and out.loc["pred", "n_spots"] == 4
    shuffled = perfect.iloc[::-1]
    assert D.domain_scores(shuffled, truth).loc["pred", "nmi"] == pytest.approx(1.0)
    both = D.domain_scores(pd.DataFrame({"x": [1, 2, 1, 2, 1], "y": perfect.to_numpy()}, index=truth.index), truth)
    assert list(both.index) == ["x", "y"] and both.loc["x", "ari"] < 0.5
    with pytest.raises(SigelInputError):
        D.domain_scores([1, 2], ["a"])
