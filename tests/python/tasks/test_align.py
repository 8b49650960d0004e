"""Across samples: anchor alignment, shifted genes, altered interactions."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest

import sigel
from sigel import SigelInputError
from sigel.tasks import align as A

# ---------------------------------------------------------------- plain tables


def _emb(n=120, d=8, seed=0, prefix="g"):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, d)), index=[f"{prefix}{i}" for i in range(n)])


def _rot(d, seed=1):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


def test_orthogonal_recovers_rotation_scale_and_offset():
    ref = _emb()
    qry = pd.DataFrame(2.5 * ref.to_numpy() @ _rot(8) + 3.0, index=ref.index)
    al = sigel.tl.align(ref, qry, anchors=list(ref.index[:60]), normalize=False)
    assert isinstance(al, sigel.tasks.align.Alignment)
    assert al.diagnostics["n_anchors"] == 60 and al.diagnostics["n_anchors_requested"] == 60
    np.testing.assert_allclose(al.aligned.loc[ref.index].to_numpy(), ref.to_numpy(), atol=1e-8)
    assert al.diagnostics["heldout_relative_error"] < 1e-10
    assert al.diagnostics["heldout_nn_accuracy"] == 1.0
    assert al.anchor_table["heldout_shift"].max() < 1e-6
    # normalised (default): rotation still recovered exactly, after centring and unit length
    al2 = sigel.tl.align(ref, qry, anchors=list(ref.index[:60]))
    assert al2.diagnostics["heldout_relative_error"] < 1e-8


@pytest.mark.parametrize("method", ["orthogonal", "linear", "mlp"])
def test_methods_shapes_keys_and_different_dims(method):
    ref = _emb(d=8)
    qry = pd.DataFrame(ref.to_numpy() @ np.random.default_rng(3).normal(size=(8, 6)), index=ref.index)
    qry = qry.iloc[::-1]  # order must not matter: everything is keyed by gene name
    al = sigel.tl.align(ref, qry, anchors=list(ref.index[:80]), method=method, n_folds=3, seed=1)
    assert al.aligned.shape == (120, 8)
    assert list(al.aligned.columns) == list(al.reference.columns)
    assert set(al.heldout.index) == set(ref.index)
    assert np.isfinite(al.aligned.to_numpy()).all()
    assert al.diagnostics["heldout_relative_error"] < 1.0
    tab = sigel.tl.shifted_genes(al)
    assert tab.index.is_unique and set(tab.index) == set(ref.index)
    assert tab["rank"].tolist() == list(range(1, 121))
    assert tab["pval"].between(0, 1).all() and (tab["qval"] >= tab["pval"] - 1e-12).all()
    assert "pvals" not in tab and repr(al).startswith("Alignment(")


def test_housekeeping_default_and_case_insensitive_mouse_symbols(caplog):
    hk = sigel.tl.housekeeping_genes()
    assert len(hk) > 3000 and "PSMB2" in hk and hk.is_unique
    mouse = [g.capitalize() for g in hk[:150]] + [f"Fake{i}" for i in range(50)]
    ref = _emb(200)
    ref.index = mouse
    qry = pd.DataFrame(ref.to_numpy() @ _rot(8), index=mouse)
    import logging
    with caplog.at_level(logging.INFO, logger="sigel"):
        sigel.settings.verbosity = 2
        try:
            al = sigel.tl.align(ref, qry)
        finally:
            sigel.settings.verbosity = 1
    assert al.diagnostics["n_anchors"] == 150
    assert al.diagnostics["n_anchors_requested"] == len(hk)
    assert "housekeeping" in al.diagnostics["anchor_source"]
    assert any("150 of" in r.getMessage() for r in caplog.records)
    assert set(al.anchors) == set(mouse[:150])


def test_input_errors():
    ref = _emb()
    with pytest.raises(SigelInputError, match="method"):
        sigel.tl.align(ref, ref, anchors=list(ref.index), method="procrustes")
    with pytest.raises(SigelInputError, match="anchor"):
        sigel.tl.align(ref, ref, anchors=["nope1", "nope2", "g1"])
    with pytest.raises(SigelInputError, match="anchors"):  # housekeeping symbols absent
        sigel.tl.align(ref, ref)
    with pytest.raises(SigelInputError, match="anchors"):
        sigel.tl.align(ref, ref, anchors="all")
    with pytest.raises(SigelInputError, match="both samples"):
        sigel.tl.align(ref, _emb(prefix="ENSG"), anchors=list(ref.index))
    with pytest.raises(SigelInputError, match="reference"):
        sigel.tl.align(np.zeros((5, 3)), ref, anchors=list(ref.index))
    with pytest.raises(SigelInputError, match="alignment"):
        sigel.tl.shifted_genes(ref)
    with pytest.raises(SigelInputError, match="reference_data"):
        sigel.tl.align(ref, ref, anchors=list(ref.index), query_data=ad.AnnData(np.zeros((2, 2))))
    with pytest.raises(SigelInputError, match="noise"):
        sigel.tl.shifted_genes(sigel.tl.align(ref, ref, anchors=list(ref.index)), use_noise=True)


def _planted(n=150, d=8, n_changed=10, noise=0.05, seed=0):
    # the noise has its own stream: drawn from the same seed as `ref` it would be 0.05 * ref, and the
    # query an exact scaled rotation whose "shifts" are rounding errors (CPU-dependent)
    rng = np.random.default_rng([seed, 1])
    ref = _emb(n, d, seed)
    q = ref.to_numpy() + rng.normal(scale=noise, size=(n, d))
    q[:n_changed] = rng.normal(size=(n_changed, d))
    qry = pd.DataFrame(q @ _rot(d, seed + 1), index=ref.index)
    return ref, qry, list(ref.index[n // 2:])


def test_shifted_genes_planted_changes_and_calibrated_null():
    ref, qry, anchors = _planted()
    al = sigel.tl.align(ref, qry, anchors=anchors, seed=0)
    tab = sigel.tl.shifted_genes(al)
    changed = [f"g{i}" for i in range(10)]
    assert set(tab.index[:10]) == set(changed)
    assert (tab.loc[changed, "qval"] < 0.05).all()
    unchanged = tab.drop(changed)
    assert (unchanged["qval"] >= 0.05).mean() > 0.95
    # null p-values roughly uniform (loose)
    from scipy.stats import kstest
    assert kstest(unchanged["pval"], "uniform").pvalue > 1e-3
    assert tab.attrs["n_null"] == len(anchors)
    # empirical null and cosine metric give the same top genes
    for kw in (dict(null="empirical"), dict(metric="cosine")):
        assert set(sigel.tl.shifted_genes(al, **kw).index[:10]) == set(changed)


def test_shifted_genes_false_discovery_rate_over_seeds():
    # 10 planted changes among 150 genes; BH at 0.05 with valid null p-values keeps the expected false
    # discovery proportion at <= 0.05 * 140/150 = 0.047. One seed's FDP takes the values 0, 1/11, 2/12, ...
    # (sd <= 0.1), so the mean of 20 seeds has a standard error <= 0.023: the bound 0.1 leaves > 2 SE
    # above the guaranteed level, and does not depend on rounding (the planted shifts are >= 40x the noise)
    fdp = []
    for seed in range(20):
        ref, qry, anchors = _planted(seed=seed)
        tab = sigel.tl.shifted_genes(sigel.tl.align(ref, qry, anchors=anchors, seed=0))
        called = set(tab.index[tab["qval"] < 0.05])
        assert {f"g{i}" for i in range(10)} <= called
        fdp.append(len(called - {f"g{i}" for i in range(10)}) / len(called))
    assert np.mean(fdp) < 0.1


def test_shifted_genes_identical_samples_call_nothing():
    # a query that is an exact rotation of the reference: shifts are rounding errors (CPU-dependent),
    # which must never be called shifted
    ref = _emb(150, 8, 0)
    qry = pd.DataFrame(1.05 * ref.to_numpy() @ _rot(8), index=ref.index)
    tab = sigel.tl.shifted_genes(sigel.tl.align(ref, qry, anchors=list(ref.index[75:]), seed=0))
    assert (tab["qval"] >= 0.05).all()


def test_anchors_do_not_benefit_from_being_fitted():
    # anchors' statistics use held-out vectors: they look like the other unchanged genes
    ref, qry, anchors = _planted(n=200, noise=0.1, seed=4)
    al = sigel.tl.align(ref, qry, anchors=anchors, seed=0)
    tab = sigel.tl.shifted_genes(al)
    non = tab[~tab["anchor"] & ~tab.index.isin([f"g{i}" for i in range(10)])]
    assert abs(np.median(tab.loc[tab["anchor"], "score"]) - np.median(non["score"])) < 0.5
    # in-sample residuals are smaller than held-out ones on average
    t = al.anchor_table
    assert t["residual"].mean() < t["heldout_shift"].mean()


def test_trim_resists_changed_anchors_and_shared_anchors():
    ref, qry, _ = _planted(n=200, n_changed=30, noise=0.05, seed=2)
    anchors = list(ref.index)  # 15% of the anchors changed
    plain = sigel.tl.align(ref, qry, anchors=anchors)
    trimmed = sigel.tl.align(ref, qry, anchors=anchors, trim=0.25)
    assert trimmed.diagnostics["n_anchors_used"] == 150
    assert not trimmed.anchor_table.loc[[f"g{i}" for i in range(30)], "used"].any()
    good = [f"g{i}" for i in range(30, 200)]
    assert trimmed.anchor_table.loc[good, "residual"].mean() < plain.anchor_table.loc[good, "residual"].mean()
    al = sigel.tl.align(ref, qry, anchors="shared", trim=0.25)
    tab = sigel.tl.shifted_genes(al)
    assert tab["anchor"].all()
    assert set(tab.index[:30]) == {f"g{i}" for i in range(30)}


def test_same_seed_same_result_and_inputs_untouched():
    ref, qry, anchors = _planted()
    r0, q0 = ref.copy(), qry.copy()
    a = sigel.tl.align(ref, qry, anchors=anchors, method="mlp", n_folds=2, seed=3)
    b = sigel.tl.align(ref, qry, anchors=anchors, method="mlp", n_folds=2, seed=3)
    pd.testing.assert_frame_equal(a.heldout, b.heldout)
    pd.testing.assert_frame_equal(sigel.tl.shifted_genes(a), sigel.tl.shifted_genes(b))
    pd.testing.assert_frame_equal(ref, r0)
    pd.testing.assert_frame_equal(qry, q0)
    # transform() maps new query-space vectors like the fitted ones
    np.testing.assert_allclose(a.transform(qry).to_numpy(), a.aligned.loc[qry.index].to_numpy(), atol=1e-10)


def test_altered_interactions_planted_pair_vectorised_pairs():
    ref = _emb(150, 8, seed=5)
    anchors = list(ref.index[75:])
    R = _rot(8, 6)
    noise = np.random.default_rng(0).normal(scale=0.05, size=ref.shape)
    qry = pd.DataFrame(ref.to_numpy() @ R + noise, index=ref.index)
    qry.iloc[0] = ref.iloc[1].to_numpy() @ R  # in the query, g0 takes g1's place
    al = sigel.tl.align(ref, qry, anchors=anchors)
    pairs = sigel.tl.altered_interactions(al, ["g0", "g2", "not_a_gene"], top=None, standardize="none")
    assert pairs.attrs["n_tested"] == len(pairs) == 2 * 149 - 1  # focus x partners, each pair once
    assert pairs.index.is_unique
    top = pairs.iloc[0]
    assert {top["gene_a"], top["gene_b"]} == {"g0", "g1"}
    assert top["qval"] < 0.05 and top["delta"] > 0.5
    # default: changes scaled by each gene's overall movement -- g0 moved as a whole, so its pairs are
    # less extreme, but g0-g1 still ranks first
    pg = sigel.tl.altered_interactions(al, ["g0", "g2"], top=None)
    assert {pg["gene_a"].iat[0], pg["gene_b"].iat[0]} == {"g0", "g1"}
    assert pg.attrs["standardize"] == "genes"
    with pytest.raises(SigelInputError, match="noise"):
        sigel.tl.altered_interactions(al, ["g0"], standardize="noise")
    assert (pairs["gene_a"] != pairs["gene_b"]).all()
    np.testing.assert_allclose(pairs["delta"], pairs["cos_query"] - pairs["cos_reference"])
    # most pairs without g0 are unchanged
    other = pg[(pg["gene_a"] != "g0") & (pg["gene_b"] != "g0")]
    assert (other["qval"] >= 0.05).mean() > 0.9
    # default focus: top shifted genes; `top` limits the returned rows
    short = sigel.tl.altered_interactions(al, top=7, n_genes=3)
    assert len(short) == 7 and short.attrs["n_focus"] == 3
    assert "g0" in set(short[["gene_a", "gene_b"]].to_numpy().ravel())
    with pytest.raises(SigelInputError):
        sigel.tl.altered_interactions(al, ["nope"])


def test_interaction_modules_counts_context_pairs():
    pairs = pd.DataFrame({
        "gene_a": ["a", "a", "b", "c"], "gene_b": ["b", "c", "d", "d"],
        "delta": [0.6, -0.4, 0.5, 0.1], "qval": [0.001, 0.01, 0.02, 0.9],
        "context_reference_a": ["context_1", "context_1", "context_0", "context_2"],
        "context_reference_b": ["context_0", "context_0", "context_1", "context_2"],
    })
    mod = sigel.tl.interaction_modules(pairs)
    assert mod.loc["context_0|context_1", "n_pairs"] == 3
    assert mod.loc["context_0|context_1", "n_gained"] == 2 and mod.loc["context_0|context_1", "n_lost"] == 1
    assert mod.loc["context_0|context_1", "n_genes"] == 4
    assert len(mod) == 1
    with pytest.raises(SigelInputError, match="context_query_a"):
        sigel.tl.interaction_modules(pairs, side="query")


def test_anndata_inputs_with_varm():
    ref, qry, anchors = _planted()
    a1 = ad.AnnData(np.zeros((3, len(ref))), var=pd.DataFrame(index=ref.index))
    a1.varm["sigel"] = ref.to_numpy()
    a2 = ad.AnnData(np.zeros((3, len(qry))), var=pd.DataFrame(index=qry.index))
    a2.varm["sigel"] = qry.to_numpy()
    al = sigel.tl.align(a1, a2, anchors=anchors)
    al0 = sigel.tl.align(ref, qry, anchors=anchors)
    np.testing.assert_allclose(al.heldout.to_numpy(), al0.heldout.to_numpy())


def test_plots_return_figures():
    import matplotlib.pyplot as plt

    ref, qry, anchors = _planted()
    al = sigel.tl.align(ref, qry, anchors=anchors)
    tab = sigel.tl.shifted_genes(al)
    for fig in (sigel.pl.shifted_genes(tab), sigel.pl.aligned_embeddings(al),
                sigel.pl.aligned_embeddings(al, max_genes=40, highlight=["g0", "g1"]),
                sigel.pl.altered_interactions(sigel.tl.altered_interactions(al, top=None))):
        assert fig.axes
        plt.close(fig)


def test_gamma_identity_fit_recovers_variance_model():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4, size=4000)
    mu = 0.7 * x + 0.2
    y = mu * rng.gamma(4.0, 1 / 4.0, size=x.size)
    a, b = A._gamma_identity_fit(y, x)
    assert abs(a - 0.7) < 0.07 and abs(b - 0.2) < 0.05


# ---------------------------------------------------------------- real SIGEL models on synthetic tissue

SWITCH_SEED = 8


@pytest.fixture(scope="module")
def two_samples():
    """Healthy and 'diseased' synthetic sections (same genes/families, some genes switch family),
    the second rotated and zoomed, each with its own small SIGEL model."""
    import torch

    torch.set_num_threads(1)
    kw = dict(n_genes=160, seed=SWITCH_SEED, shape=(26, 26))
    a1 = sigel.datasets.synthetic_tissue(**kw)
    a2 = sigel.datasets.synthetic_tissue(**kw, switch_fraction=0.2, rotate=30.0, scale=0.9,
                                         sample_seed=SWITCH_SEED + 100)
    hyper = dict(epochs=30, pretrain_epochs=8, embed_dim=16, width=32, depth=2, n_contexts=6)
    m1 = sigel.SIGEL(**hyper).fit(a1, seed=0, device="cpu")
    m2 = sigel.SIGEL(**hyper).fit(a2, seed=1, device="cpu")
    sw = a2.var["switched"].astype(bool)
    non = sw.index[~sw]
    anchors = list(np.random.default_rng(0).choice(non, size=len(non) // 2, replace=False))
    al = sigel.tl.align(m1, m2, anchors=anchors, reference_data=a1, query_data=a2, seed=0)
    return dict(a1=a1, a2=a2, m1=m1, m2=m2, switched=sw, anchors=anchors, alignment=al)


def test_real_models_switched_genes_rank_top(two_samples):
    from sklearn.metrics import roc_auc_score

    al, sw = two_samples["alignment"], two_samples["switched"]
    assert al.diagnostics["n_anchors"] == len(two_samples["anchors"])
    assert al.noise is not None and np.isfinite(al.noise.to_numpy()).all()
    assert al.reference_contexts is not None and al.query_contexts is not None
    tab = sigel.tl.shifted_genes(al)
    y = sw.reindex(tab.index).to_numpy()
    assert roc_auc_score(y, tab["score"]) >= 0.9
    assert (tab.loc[~y, "qval"] >= 0.05).mean() >= 0.8          # unchanged genes mostly not called
    assert (tab.loc[tab["anchor"], "qval"] >= 0.05).mean() >= 0.8
    assert {"context_reference", "context_query", "noise"} <= set(tab.columns)


def test_real_models_altered_pairs_involve_switched_genes(two_samples):
    from sklearn.metrics import roc_auc_score

    al, sw = two_samples["alignment"], two_samples["switched"]
    f1 = two_samples["a1"].var["family"].astype(str)
    f2 = two_samples["a2"].var["family"].astype(str)
    pairs = sigel.tl.altered_interactions(al, top=None)
    ga, gb = pairs["gene_a"].to_numpy(), pairs["gene_b"].to_numpy()
    # a pair's relation truly changed when the two genes stopped / started sharing a pattern family
    def same(f):
        a, b = f.reindex(ga).to_numpy(), f.reindex(gb).to_numpy()
        return (a == b) & (a != "none")

    changed = same(f1) != same(f2)
    assert roc_auc_score(changed, pairs["score"].abs()) >= 0.6
    # the split-half-noise scaling ranks them sharper here (it is not the default: on real adjacent
    # sections it is not calibrated, see the docstring); the top pairs then all involve switched genes
    sharp = sigel.tl.altered_interactions(al, top=50, standardize="noise")
    involved = sw.reindex(sharp["gene_a"]).to_numpy() | sw.reindex(sharp["gene_b"]).to_numpy()
    assert involved.mean() >= 0.9
    assert {"context_reference_a", "context_query_b"} <= set(pairs.columns)
    mod = sigel.tl.interaction_modules(pairs)
    assert mod["n_pairs"].sum() == (pairs["qval"] < 0.05).sum()
