"""Spatially variable genes (sigel.tl.svg), Moran's I, the SPARK-X-style test and the comparison."""
import numpy as np
import pandas as pd
import pytest
import torch

import sigel
from sigel._validate import SigelInputError
from sigel.tasks.svg import bh, rank_agreement, svg_scores

from conftest import skip_or_fail

N_NULL_GENES = 900


def _r_or_skip():
    from sigel._rbridge import r_available

    if not r_available():
        skip_or_fail("rpy2 or the R package 'sigel' is not available")


def _tissue(noise):
    # many pattern-free genes (for calibration) + 5 planted families (for power); same spots for any noise
    return sigel.datasets.synthetic_tissue(N_NULL_GENES + 200, frac_pattern_free=N_NULL_GENES / (N_NULL_GENES + 200),
                                           shape=(20, 20), seed=0, noise=noise)


@pytest.fixture(scope="module")
def tissue():
    """Log-normal x negative binomial noise (the generator's default)."""
    return _tissue(0.3)


@pytest.fixture(scope="module")
def tissue_nb():
    """Negative binomial noise: the ZINB null's own family."""
    return _tissue(0.0)


@pytest.fixture(scope="module")
def model(tissue):
    torch.set_num_threads(1)
    fam = tissue.var["family"].astype(str)
    train = list(tissue.var_names[fam != "none"][:100]) + list(tissue.var_names[fam == "none"][:50])
    return sigel.SIGEL(epochs=3, pretrain_epochs=1, embed_dim=8, width=16, depth=1, n_heads=2,
                       decoder_width=16, n_contexts=5).fit(tissue, genes=train, seed=0)


@pytest.fixture(scope="module")
def svg_table(model, tissue):
    ad = tissue.copy()
    tab = sigel.tl.svg(model, ad, genes=ad.var_names, n_null=10, seed=0)
    return tab, ad


def _calibration(tab, adata, record_property=None, label=None):
    """Fraction of pattern-free genes with p < 0.05 and power at q < 0.05; recorded and printed when labelled."""
    fam = adata.var["family"].astype(str).reindex(tab.index)
    null = tab[fam == "none"]
    assert len(null) >= 850
    frac = float((null["pval"] < 0.05).mean())
    power = float((tab.loc[fam != "none", "qval"] < 0.05).mean())
    if label is not None:
        record_property(f"{label}_null_frac_p05", frac)
        record_property(f"{label}_power_q05", power)
        print(f"\n{label}: pattern-free genes with p < 0.05: {frac:.3f}; planted genes at q < 0.05: {power:.3f}")
    return frac, power


# ---------------------------------------------------------------- core
def test_bh_matches_definition():
    p = np.array([0.01, 0.04, 0.03, 0.5, np.nan])
    q = bh(p)
    assert np.isnan(q[4])
    ref = np.minimum.accumulate((np.sort(p[:4]) * 4 / np.arange(1, 5))[::-1])[::-1]
    assert np.allclose(np.sort(q[:4]), ref)


def test_svg_scores_core_calibrated_and_powerful():
    rng = np.random.default_rng(0)
    G, n1, D = 2000, 11, 6
    scale = np.exp(rng.normal(0, 0.5, G))[:, None, None]      # gene-specific spread: the score is pivotal
    C = rng.normal(size=(G, n1, D)) * scale
    R = rng.normal(size=(G, D)) * scale[:, 0]
    R[:100] += 5 * scale[:100, 0]                               # planted
    level = rng.uniform(0, 5, G)
    tab = svg_scores(R, C, level, index=[f"g{i}" for i in range(G)], metric="euclidean", reference="gene")
    null = tab.loc[[f"g{i}" for i in range(100, G)]]
    assert 0.035 < (null["pval"] < 0.05).mean() < 0.065
    assert (tab.loc[[f"g{i}" for i in range(100)], "qval"] < 0.05).mean() > 0.9
    assert list(tab.columns) == ["score", "pval", "qval", "rank", "bin"]
    assert tab["rank"].tolist() == list(range(1, G + 1))
    assert tab["bin"].nunique() == 10
    with pytest.raises(SigelInputError, match="controls must have shape"):
        svg_scores(R, C[:, :2], level, reference="gene")
    with pytest.raises(SigelInputError, match="controls must have shape"):
        svg_scores(R, C[:, :0], level)


def test_level_reference_calibrated_and_less_noisy_than_each_genes_own():
    """Controls land alike at one expression level (their spread falls with level), and 6 controls
    estimate a gene's own reference poorly: pooling the controls of the genes nearest in level gives a
    calibrated null and ranks the planted genes better than each gene's own controls do; with 2
    controls per gene it still does."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    G, n1, D = 3000, 7, 8
    level = rng.uniform(0, 5, G)
    scale = np.exp(-0.4 * level)[:, None]                       # deeper genes: tighter controls
    C = rng.normal(size=(G, n1, D)) * scale[:, None]
    R = rng.normal(size=(G, D)) * scale
    planted = np.zeros(G, bool)
    planted[rng.choice(G, 150, replace=False)] = True
    R[planted, 0] += 4.0 * scale[planted, 0]                    # a shift of a few spreads
    idx = [f"g{i}" for i in range(G)]
    tabs = {sp_: svg_scores(R, C, level, index=idx, metric="euclidean", reference=sp_).loc[idx]
            for sp_ in ("level", "gene")}
    for sp_, tab in tabs.items():
        assert 0.03 < (tab.loc[~planted, "pval"] < 0.05).mean() < 0.07, sp_
    ap = {sp_: average_precision_score(planted, tab["score"]) for sp_, tab in tabs.items()}
    assert ap["level"] > ap["gene"] + 0.05, ap
    # a window of every gene ignores the level trend: deep genes' scores shrink, and the ranking is worse
    flat = svg_scores(R, C, level, index=idx, metric="euclidean", window=G).loc[idx]
    assert average_precision_score(planted, flat["score"]) < ap["level"] - 0.2
    two = svg_scores(R, C[:, :2], level, index=idx, metric="euclidean").loc[idx]
    assert 0.03 < (two.loc[~planted, "pval"] < 0.05).mean() < 0.07
    assert average_precision_score(planted, two["score"]) > ap["gene"] + 0.05
    with pytest.raises(SigelInputError, match="reference"):
        svg_scores(R, C, level, reference="bin")


def test_whitened_metric_calibrated_and_sees_directions_controls_never_reach():
    """Controls vary a lot along one axis (noise); a shift along a quiet axis is found only after whitening."""
    rng = np.random.default_rng(1)
    G, n1, D = 2000, 11, 6
    axes = np.array([3.0, 0.3, 0.3, 0.3, 0.3, 0.3])
    C = rng.normal(size=(G, n1, D)) * axes
    R = rng.normal(size=(G, D)) * axes
    R[:100, 1] += 2.0                                           # planted: along a quiet direction
    C[..., 5] += 10.0
    R[:, 5] += 10.0                                             # away from the origin: noise is tangential
    level = rng.uniform(0, 5, G)
    idx = [f"g{i}" for i in range(G)]
    white = svg_scores(R, C, level, index=idx, metric="whitened")
    plain = svg_scores(R, C, level, index=idx, metric="cosine")
    assert 0.03 < (white.loc[idx[100:], "pval"] < 0.05).mean() < 0.07
    assert (white.loc[idx[:100], "pval"] < 0.05).mean() > 0.85
    assert (plain.loc[idx[:100], "pval"] < 0.05).mean() < 0.2


def test_rank_agreement():
    t = pd.DataFrame({"a_rank": [1, 2, 3, 4, 5], "b_rank": [5, 4, 3, 2, 1], "c_rank": [1, 2, 3, 5, 4]})
    rho, ov = rank_agreement(t, top_k=(2,))
    assert rho.loc["a", "b"] == pytest.approx(-1) and rho.loc["a", "c"] == pytest.approx(0.9)
    assert ov.set_index(["method_a", "method_b"]).loc[("a", "c"), "overlap"] == 2


# ---------------------------------------------------------------- Moran's I
def test_morans_i_matches_dense_formula(tissue):
    ad = tissue[:, list(range(20)) + list(range(tissue.n_vars - 20, tissue.n_vars))].copy()
    tab = sigel.tl.morans_i(ad, n_neighbors=4)
    from sigel.tasks.svg import _knn_weights

    W = _knn_weights(ad.obsm["spatial"], 4).toarray()
    X = ad.X.toarray()
    lib = X.sum(1)  # row sums of the AnnData given
    Z = np.log1p(X * (np.median(lib) / lib)[:, None])
    Z = Z - Z.mean(0)
    n = len(Z)
    I = n / W.sum() * np.einsum("ig,ij,jg->g", Z, W, Z) / (Z ** 2).sum(0)
    assert np.allclose(tab["I"].reindex(ad.var_names), I)
    fam = ad.var["family"].astype(str).reindex(tab.index)
    assert tab.loc[fam != "none", "I"].median() > 0.3 > tab.loc[fam == "none", "I"].median()


# ---------------------------------------------------------------- svg with the real model
def test_svg_calibration_on_pattern_free_genes(svg_table, tissue_nb, tissue, model, record_property):
    # default (ZINB) null on the default synthetic tissue (log-normal x NB noise, lighter-tailed than the
    # ZINB fit expects): calibrated or a little conservative, never liberal
    tab, _ = svg_table
    frac, _ = _calibration(tab, tissue, record_property, "sigel")
    assert 0.02 <= frac <= 0.07
    assert np.isfinite(tab["score"]).all() and tab["pval"].between(0, 1).all()
    # the ZINB null on negative binomial data (its own family)
    tab_z = sigel.tl.svg(model, tissue_nb.copy(), genes=tissue_nb.var_names, n_null=10, null="zinb", seed=0)
    frac_z, _ = _calibration(tab_z, tissue_nb, record_property, "sigel_zinb_nb")
    assert 0.01 <= frac_z <= 0.07
    # the permutation null (the gene's exact marginal) where depth is not spatial
    tab_p = sigel.tl.svg(model, tissue.copy(), genes=tissue.var_names, n_null=10, null="permutation", seed=0)
    frac_p, _ = _calibration(tab_p, tissue, record_property, "sigel_permutation")
    assert 0.03 <= frac_p <= 0.07


def test_svg_table_and_writes(svg_table, model, tissue):
    tab, ad = svg_table
    assert list(tab.columns) == ["score", "pval", "qval", "rank", "bin", "mean"]
    assert tab.index.name == "gene" and tab["rank"].iloc[0] == 1
    assert tab["score"].is_monotonic_decreasing
    assert np.allclose(ad.var.loc[tab.index, "sigel_svg_score"], tab["score"])
    assert ad.uns["sigel_svg"]["params"]["n_null"] == 10
    assert ad.uns["sigel_svg"]["params"]["null"] == "zinb"
    assert ad.uns["sigel_svg"]["params"]["reference"] == "level"
    assert "sigel_svg_score" not in tissue.var  # inputs are not modified
    # same seed -> same table; a gene subset gives a table for that subset
    sub = tissue.var_names[:60]
    a = sigel.tl.svg(model, tissue.copy(), genes=sub, n_null=4, seed=1)
    b = sigel.tl.svg(model, tissue.copy(), genes=sub, n_null=4, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert set(a.index) == set(sub)
    with pytest.raises(SigelInputError, match="n_null"):
        sigel.tl.svg(model, tissue.copy(), n_null=0)
    with pytest.raises(SigelInputError, match="n_null"):
        sigel.tl.svg(model, tissue.copy(), n_null=1, reference="gene")
    with pytest.raises(SigelInputError, match="reference"):
        sigel.tl.svg(model, tissue.copy(), reference="bin")
    with pytest.raises(SigelInputError, match="not trained"):
        sigel.tl.svg(sigel.SIGEL(), tissue.copy())


# ---------------------------------------------------------------- SPARK-X-style (R) and comparison
def test_sparkx_calibration_and_power(tissue, record_property):
    _r_or_skip()
    from sigel._rbridge import sparkx_r

    fam = tissue.var["family"].astype(str).to_numpy()
    res = sparkx_r(tissue.X, tissue.obsm["spatial"], genes=tissue.var_names)
    assert list(res.index) == list(tissue.var_names)
    assert {"stat", "pval", "qval", "p_projection", "p_gaussian1", "p_cosine5"} <= set(res.columns)
    frac = float((res["pval"].to_numpy()[fam == "none"] < 0.05).mean())
    power = float((res["qval"].to_numpy()[fam != "none"] < 0.05).mean())
    record_property("sparkx_null_frac_p05", frac)
    record_property("sparkx_power_q05", power)
    print(f"\nSPARK-X-style: pattern-free genes with p < 0.05: {frac:.3f}; planted genes at q < 0.05: {power:.3f}")
    assert 0.03 <= frac <= 0.07
    assert power > 0.9


def test_sparkx_mixture_tail_is_exact():
    _r_or_skip()
    import rpy2.robjects as ro
    from scipy import integrate, stats

    lam = (0.9, 0.3)
    t = np.array([0.5, 2.0, 8.0, 30.0])
    ours = np.exp(np.array(ro.r("sigel:::.chisq_mix_logsf")(ro.FloatVector(t), ro.FloatVector(lam))))
    a, b = lam

    def sf(tt):
        f = lambda x: stats.chi2.pdf(x / a, 1) / a * stats.chi2.sf((tt - x) / b, 1)
        return integrate.quad(f, 0, tt, limit=200)[0] + stats.chi2.sf(tt / a, 1)

    ref = np.array([sf(tt) for tt in t])
    assert np.allclose(ours, ref, rtol=2e-3)


def test_compare_svg(model, tissue):
    _r_or_skip()
    ad = tissue[:, :150].copy()
    out = sigel.tl.compare_svg(model, ad, genes=ad.var_names, n_null=4, top_k=(10, 30))
    cols = ["sigel_score", "sigel_pval", "sigel_qval", "sigel_rank", "sparkx_stat", "sparkx_pval", "sparkx_qval",
            "sparkx_rank", "moran_I", "moran_pval", "moran_qval", "moran_rank"]
    assert list(out.columns) == cols and len(out) == 150
    rho, ov = rank_agreement(out, top_k=(10, 30))
    assert list(rho.columns) == ["sigel", "sparkx", "moran"] and np.allclose(np.diag(rho), 1)
    assert out.attrs["spearman"]["sparkx"]["moran"] == pytest.approx(rho.loc["sparkx", "moran"])
    assert out.attrs["overlap"] == ov.to_dict("records")
    assert len(ov) == 6 and ov["fraction"].between(0, 1).all()
    assert set(out.attrs["seconds"]) == {"sigel", "sparkx", "moran"}
    # SPARK-X-style and Moran's I agree strongly on planted vs flat genes
    assert rho.loc["sparkx", "moran"] > 0.5
    assert "sigel_compare_svg" in ad.uns


def test_svg_figure_pairs_each_gene_with_its_control(svg_table, model):
    import matplotlib

    matplotlib.use("Agg")
    from sigel.tasks.svg import control_images

    tab, ad = svg_table
    top = list(tab.index[:12])
    ctrl = control_images(model, ad, top, seed=0)
    assert list(ctrl.genes) == [f"{g} (control)" for g in top] and ctrl.shape[1:] == model.images_.shape[1:]
    # a control keeps its gene's total counts (in expectation) but not its pattern
    images = sigel.GeneImages.from_anndata(ad, genes=top)
    fig = sigel.pl.svg(tab, images, controls=ctrl)
    assert sum(bool(a.images) for a in fig.axes) == 24
    titles = [a.get_title() for a in fig.axes if a.images]
    assert titles[1] == "homogeneous control" and titles[0].startswith(top[0])
    with pytest.raises(SigelInputError, match="no control image"):
        sigel.pl.svg(tab, images, controls=control_images(model, ad, top[:3]))


def _depth_gradient_nulls(tissue):
    """The tissue with 300 depth-homogeneous genes appended (their rate the same everywhere, sequencing
    depth a 5-fold gradient across the tissue, library sizes in obs['lib']); their names."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    a = tissue.copy()
    x = a.obs["x"].to_numpy(float)
    lib = 2000.0 * (0.3 + 1.4 * (x - x.min()) / np.ptp(x))          # depth rises 5-fold across the tissue
    a.obs["lib"] = lib
    tot = np.asarray(a.X.sum(axis=0)).ravel()
    src = rng.choice(np.flatnonzero(tot >= 20), 300, replace=False)
    Y = np.stack([rng.multinomial(int(t), lib / lib.sum()) for t in tot[src]], axis=1)
    names = [f"null{i}" for i in range(len(src))]
    new = ad.AnnData(sp.csr_matrix(Y.astype(np.float32)), obs=a.obs[[]], var=pd.DataFrame(index=names))
    both = ad.concat([a, new], axis=1)
    both.obs, both.obsm = a.obs.copy(), a.obsm.copy()
    return both, names


def test_zinb_null_calibrated_when_depth_is_spatial(model, tissue, record_property):
    """Genes whose rate is the same everywhere, on a tissue whose sequencing depth is a gradient:
    their counts follow depth; controls drawn with mean proportional to depth must look the same."""
    both, names = _depth_gradient_nulls(tissue)
    opts = {"library_size_key": "lib"}
    fr = {}
    for null in ("zinb", "permutation"):
        tab = sigel.tl.svg(model, both, genes=names, n_null=10, null=null, image_options=opts, seed=0)
        fr[null] = float((tab["pval"] < 0.05).mean())
        record_property(f"depth_homogeneous_{null}_frac_p05", fr[null])
    assert 0.01 <= fr["zinb"] <= 0.09, fr


def test_local_variance_null_calibrated_and_keeps_power(model, tissue, svg_table, record_property):
    """The default variance='local' (ZINB fitted to the spot-to-neighbour variance) and 'marginal' are both
    calibrated on the depth-gradient null genes; 'local' is calibrated on the pattern-free genes and ranks
    the planted patterns at least as well as 'marginal'."""
    both, names = _depth_gradient_nulls(tissue)
    for variance in ("local", "marginal"):
        tab = sigel.tl.svg(model, both, genes=names, n_null=10, variance=variance,
                           image_options={"library_size_key": "lib"}, seed=0)
        frac = float((tab["pval"] < 0.05).mean())
        record_property(f"depth_homogeneous_{variance}_frac_p05", frac)
        assert 0.01 <= frac <= 0.09, (variance, frac)
    loc, ad = svg_table
    assert ad.uns["sigel_svg"]["params"]["variance"] == "local"
    frac_loc, _ = _calibration(loc, ad, record_property, "local_variance")
    assert 0.01 <= frac_loc <= 0.09, frac_loc
    # power as ranking: AUROC of planted vs pattern-free genes by score (this tiny model calls few at q < 0.05)
    from sklearn.metrics import roc_auc_score

    marg = sigel.tl.svg(model, tissue.copy(), n_null=10, seed=0, variance="marginal")
    auc = {}
    for name, tab in (("local", loc), ("marginal", marg)):
        planted = (tissue.var["family"].astype(str).reindex(tab.index) != "none").to_numpy()
        auc[name] = float(roc_auc_score(planted, tab["score"]))
    record_property("planted_auroc", auc)
    print(f"\nplanted vs pattern-free AUROC by score: {auc}")
    assert auc["local"] > 0.6 and auc["local"] >= auc["marginal"] - 0.02, auc
    with pytest.raises(SigelInputError, match="variance"):
        sigel.tl.svg(model, tissue, variance="spatial")


def test_svg_draws_average_depth_matched_reads(model, tissue):
    # the default model reads depth-matched draws; `draws` sets how many are averaged into each vector
    assert model.image_options_.get("rarefy") is not None
    ad = tissue.copy()
    images = model.images_for(ad, genes=ad.var_names[:120])
    from sigel.data.views import rarefied

    deep = ~rarefied(images).read_whole
    assert deep.any() and (~deep).any()
    z_default = model.embed_images(images)
    np.testing.assert_array_equal(z_default, model.embed_images(images, draws=model.init_params_["rarefy_draws"]))
    z1, z8 = model.embed_images(images, draws=1), model.embed_images(images, draws=8)
    np.testing.assert_array_equal(z1[~deep], z8[~deep])  # genes at or below the common depth: one whole read
    assert not np.allclose(z1[deep], z8[deep])
    with pytest.raises(SigelInputError, match="draws"):
        model.embed_images(images, draws=0)
    sub = ad.var_names[:60]
    a = sigel.tl.svg(model, ad, genes=sub, n_null=4, draws=2, seed=3)
    assert ad.uns["sigel_svg"]["params"]["draws"] == 2
    pd.testing.assert_frame_equal(a, sigel.tl.svg(model, tissue.copy(), genes=sub, n_null=4, draws=2.0, seed=3))
    assert not np.allclose(a["score"], sigel.tl.svg(model, tissue.copy(), genes=sub, n_null=4, draws=1,
                                                     seed=3)["score"].reindex(a.index))
    with pytest.raises(SigelInputError, match="draws"):
        sigel.tl.svg(model, tissue.copy(), genes=sub, draws=2.5)


def test_depth_draws_read_each_gene_as_often_as_its_counts_allow(model, tissue):
    # draws='depth': a gene k times deeper than the common depth is read k times (between rarefy_draws and 4x that)
    from sigel.data.views import rarefied
    from sigel.train.trainer import embed_draws

    ad = tissue.copy()
    images = model.images_for(ad, genes=ad.var_names[:150])
    r = rarefied(images)
    T = images.settings["rarefy"]
    total = np.asarray(images.counts.sum(1)).ravel()
    n = r.draws_by_depth(4, 16)
    deep = ~r.read_whole
    np.testing.assert_array_equal(n[~deep], 1)
    np.testing.assert_array_equal(n[deep], np.clip(np.ceil(total[deep] / T), 4, 16))
    assert (n[deep] > 4).any() and (n[deep] == 4).any(), "the test tissue needs genes on both sides of 4x depth"
    with pytest.raises(SigelInputError, match="max_draws"):
        r.draws_by_depth(5, 4)
    # one count for every gene, as an array, is the plain fixed-count read, bit for bit
    kw = dict(batch_size=32)
    fixed = embed_draws(model.module_, rarefied(images), 4, **kw)
    np.testing.assert_array_equal(fixed.numpy(), embed_draws(model.module_, rarefied(images), np.full(150, 4),
                                                             **kw).numpy())
    z4, zd = model.embed_images(images, draws=4), model.embed_images(images, draws="depth")
    four = n <= 4  # whole reads and genes read 4 times: the same draws as draws=4
    np.testing.assert_array_equal(zd[four], z4[four])
    assert not np.allclose(zd[~four], z4[~four])
    with pytest.raises(SigelInputError, match="draws"):
        model.embed_images(images, draws="deep")
    sub = ad.var_names[:60]
    tab = sigel.tl.svg(model, ad, genes=sub, n_null=4, draws="depth", seed=3)
    assert ad.uns["sigel_svg"]["params"]["draws"] == "depth"
    pd.testing.assert_frame_equal(tab, sigel.tl.svg(model, tissue.copy(), genes=sub, n_null=4, draws="depth", seed=3))


def test_embed_with_controls_is_what_svg_scores(model, tissue):
    """The vectors `embed_with_controls` returns are the ones `tl.svg` scores (benchmarks build on it)."""
    from sigel.tasks.svg import embed_with_controls

    sub = tissue.var_names[:50]
    genes, real, C, mean = embed_with_controls(model, tissue.copy(), sub, 2, seed=4)
    assert list(genes) == list(sub) and real.shape == (50, C.shape[2]) and C.shape[:2] == (50, 2)
    assert np.all(mean > 0)
    tab = sigel.tl.svg(model, tissue.copy(), genes=sub, n_null=2, seed=4)
    again = svg_scores(real, C, np.log1p(mean), index=genes)
    np.testing.assert_allclose(again["score"].reindex(tab.index), tab["score"], rtol=1e-12)
    np.testing.assert_allclose(again["pval"].reindex(tab.index), tab["pval"], rtol=1e-12)


def test_level_reference_needs_two_controls_in_all():
    R = np.zeros((1, 4))
    with pytest.raises(SigelInputError, match="at least 2 controls"):
        svg_scores(R, np.ones((1, 1, 4)), [0.0])
    tab = svg_scores(R, np.random.default_rng(0).normal(size=(1, 2, 4)), [0.0], index=["g"])
    assert tab["pval"].between(0, 1).all() and np.isfinite(tab["score"]).all()
