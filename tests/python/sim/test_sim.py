"""The pseudo-gene simulator (sigel.sim): templates, calibration, homogeneous controls, engines."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sigel
from sigel import sim
from sigel._validate import SigelInputError

from conftest import skip_or_fail


@pytest.fixture(scope="module")
def tissue():
    return sigel.datasets.synthetic_tissue(120, shape=(20, 20), seed=3)


def _r_or_skip():
    from sigel._rbridge import r_available

    if not r_available():
        skip_or_fail("rpy2 or the R package 'sigel' is not available")


# ---------------------------------------------------------------- templates
def test_region_weights_kinds():
    xy = np.c_[np.arange(6.0), np.zeros(6)]
    W, reg, hard = sim.region_weights(xy, np.array(["b", "a", "b", "c", "a", "a"]))
    assert reg == ["a", "b", "c"] and W.shape == (6, 3)
    assert hard.tolist() == [1, 0, 1, 2, 0, 0] and np.allclose(W.sum(1), 1)
    W, reg, _ = sim.region_weights(xy, pd.Categorical(list("xyxyxy"), categories=["y", "x"]))
    assert reg == ["y", "x"] and W[0].tolist() == [0.0, 1.0]
    W, reg, hard = sim.region_weights(xy, np.arange(6) >= 3)
    assert reg == ["background", "pattern"] and hard.tolist() == [0, 0, 0, 1, 1, 1]
    w = np.linspace(0, 1, 6)
    W, reg, hard = sim.region_weights(xy, w)
    assert np.allclose(W[:, 1], w) and hard.tolist() == [0, 0, 0, 1, 1, 1]
    W, reg, _ = sim.region_weights(xy, np.array([0, 2, 2, 0, 10, 10]))
    assert reg == ["0", "10", "2"]
    with pytest.raises(SigelInputError, match="in \\[0, 1\\]"):
        sim.region_weights(xy, np.linspace(0, 2.5, 6))
    with pytest.raises(SigelInputError, match="6 spots"):
        sim.region_weights(xy, np.ones(5, bool))


def test_image_template_and_taper(tissue):
    xy = tissue.obsm["spatial"]
    img = np.zeros((10, 10), bool)
    img[:5] = True  # top half of the image = small y
    lab = sim.from_mask(xy, img)
    v = (xy[:, 1] - xy[:, 1].min()) / np.ptp(xy[:, 1])
    assert lab[v < 0.4].all() and not lab[v > 0.6].any()
    W0, _, _ = sim.region_weights(xy, lab)
    W1, _, _ = sim.region_weights(xy, lab, taper=2.0)
    assert np.allclose(W1.sum(1), 1)
    edge = (W1[:, 1] > 0.05) & (W1[:, 1] < 0.95)
    assert edge.sum() > 10 and set(np.unique(W0[:, 1])) == {0.0, 1.0}
    # far from the edge nothing changes
    assert np.allclose(W1[v < 0.1], W0[v < 0.1])


def test_template_builders(tissue):
    xy = tissue.obsm["spatial"]
    lay = sim.layers(xy, 3)
    assert set(lay) == {"layer0", "layer1", "layer2"}
    c = sim.core(xy, radius=0.2, edge=0.1)
    assert c.max() == 1.0 and c.min() == 0.0 and ((c > 0) & (c < 1)).any()
    assert sim.core(xy, radius=0.2).dtype == bool
    r = sim.ring(xy, radius=0.3, width=0.1)
    cr = sim.crescent(xy, radius=0.3, width=0.1, direction=0, span=90)
    assert 0 < cr.sum() < r.sum() and not (cr & ~r).any()
    cb = sim.checkerboard(xy, 4)
    assert 0.3 < cb.mean() < 0.7
    rim = sim.interface(xy, tissue.obs["domain"], "1", width=1.0, side="inside")
    assert rim.any() and (tissue.obs["domain"].to_numpy()[rim] == "1").all()
    both = sim.interface(xy, tissue.obs["domain"], "1", width=1.0)
    assert both.sum() > rim.sum()


# ---------------------------------------------------------------- calibration
def test_trend_recovers_negative_binomial():
    rng = np.random.default_rng(0)
    n, G, theta = 500, 300, 4.0
    mu = np.exp(rng.uniform(np.log(0.5), np.log(50), G))
    X = rng.negative_binomial(theta, theta / (theta + mu[None, :]), size=(n, G))
    a0, a1 = sim.fit_trend(X)
    assert abs(a0 - 1 / theta) < 0.05 and abs(a1 - 1.0) < 0.15


def test_quantile_targets_and_means(tissue):
    xy = tissue.obsm["spatial"]
    tpl = sim.layers(xy, 2)
    q = {"layer0": 0.8, "layer1": 0.3}
    y, p = sim.pseudo_gene(tissue, tpl, quantiles=q, n_draws=300, seed=0, return_params=True)
    X = tissue.X.toarray()
    sf = X.sum(1) / X.sum(1).mean()
    Y = X / sf[:, None]
    for r in ("layer0", "layer1"):
        gm = Y[tpl == r].mean(0)[X.sum(0) > 0]
        assert p["region_means"][r] == pytest.approx(np.quantile(gm, q[r]))
        # draws: mean close to mu (sf * region mean), variance from the trend
        sel = tpl == r
        assert y[sel].mean() == pytest.approx(p["mu"][sel].mean(), rel=0.03)
    assert p["region_means"]["layer0"] > p["region_means"]["layer1"]
    # explicit means, no calibration counts: default trend, size factor 1
    y2, p2 = sim.pseudo_gene(xy, tpl, means={"layer0": 20, "layer1": 2}, n_draws=200, seed=1,
                             return_params=True)
    assert p2["trend"] == sim.DEFAULT_TREND
    a0, a1 = p2["trend"]
    hi = y2[tpl == "layer0"]
    assert hi.mean() == pytest.approx(20, rel=0.03)
    assert hi.var() == pytest.approx(a0 * 400 + a1 * 20, rel=0.1)


def test_pseudo_gene_reproducible_and_checked(tissue):
    tpl = sim.core(tissue.obsm["spatial"], radius=0.3)
    kw = dict(quantiles={"pattern": 0.9, "background": 0.4}, n_draws=3, taper=1.0)
    a = sim.pseudo_gene(tissue, tpl, seed=5, **kw)
    b = sim.pseudo_gene(tissue, tpl, seed=5, **kw)
    assert a.dtype.kind == "i" and np.array_equal(a, b)
    assert not np.array_equal(a, sim.pseudo_gene(tissue, tpl, seed=6, **kw))
    with pytest.raises(SigelInputError, match="exactly one"):
        sim.pseudo_gene(tissue, tpl, quantiles={"pattern": 0.9}, means={"pattern": 1})
    with pytest.raises(SigelInputError, match="no target for regions"):
        sim.pseudo_gene(tissue, tpl, quantiles={"pattern": 0.9})
    with pytest.raises(SigelInputError, match="calibration counts"):
        sim.pseudo_gene(tissue.obsm["spatial"], tpl, quantiles={"pattern": 0.9, "background": 0.1})
    with pytest.raises(SigelInputError, match="engine"):
        sim.pseudo_gene(tissue, tpl, engine="julia", **kw)


# ---------------------------------------------------------------- homogeneous mode
def test_fit_zinb_recovers_parameters():
    rng = np.random.default_rng(1)
    n, G = 4000, 5
    mu, theta, pi = 6.0, 2.0, 0.3
    X = rng.negative_binomial(theta, theta / (theta + mu), size=(n, G)) * (rng.random((n, G)) >= pi)
    p = sim.fit_zinb(X)
    assert np.allclose(p["pi"], pi, atol=0.05)
    assert np.allclose(p["mu"], mu, rtol=0.1)
    assert np.allclose(p["theta"], theta, rtol=0.35)
    Xp = rng.poisson(3.0, size=(n, 2))
    pp = sim.fit_zinb(Xp)
    assert (pp["pi"] < 0.02).all() and (pp["theta"] > 20).all()


def test_homogeneous_keeps_marginal_and_depth(tissue):
    X = tissue.X[:, :30]
    y = sim.homogeneous(X, 20, seed=0)
    assert y.shape == (tissue.n_obs, 30, 20)
    Xd = X.toarray()
    assert np.allclose(y.mean((0, 2)), Xd.mean(0), rtol=0.08)
    assert np.allclose(y.var((0, 2)), Xd.var(0), rtol=0.25)
    # shuffled: no correlation with the real gene's spatial map
    assert abs(np.corrcoef(y[:, 0, 0], Xd[:, 0])[0, 1]) < 0.2
    # depth-aware controls follow the library size
    lib = np.where(np.arange(tissue.n_obs) % 2 == 0, 1000.0, 3000.0)
    yd = sim.homogeneous(X, 20, library_size=lib, seed=0)
    ratio = yd[lib == 3000].mean() / yd[lib == 1000].mean()
    assert 2.5 < ratio < 3.5
    assert np.array_equal(y, sim.homogeneous(X, 20, seed=0))


def test_pseudo_images_match_real_images(tissue):
    """A 'pseudo-gene' equal to a real gene's counts is imaged exactly like the real gene."""
    im = sigel.GeneImages.from_anndata(tissue)
    g = im.genes[:3]
    counts = tissue[:, g].X
    pim = sim.pseudo_images(tissue, counts, list(g), im.settings)
    assert pim.shape == im.shape and np.array_equal(pim.mask, im.mask)
    assert np.allclose(pim.values.toarray(), im.subset(g).values.toarray(), atol=1e-6)


# ---------------------------------------------------------------- R engine
def test_engines_agree_pattern(tissue):
    _r_or_skip()
    xy = tissue.obsm["spatial"]
    tpl = sim.layers(xy, 3)
    q = {"layer0": 0.9, "layer1": 0.5, "layer2": 0.2}
    kw = dict(quantiles=q, n_draws=300, taper=1.0, return_params=True)
    yn, pn = sim.pseudo_gene(tissue, tpl, seed=1, **kw)
    yr, pr = sim.pseudo_gene(tissue, tpl, seed=1, engine="r", **kw)
    # deterministic parts are identical
    assert pn["regions"] == pr["regions"]
    for r in pn["regions"]:
        assert pn["region_means"][r] == pytest.approx(pr["region_means"][r], rel=1e-9)
    assert np.allclose(pn["trend"], pr["trend"], rtol=1e-9)
    assert np.allclose(pn["weights"], pr["weights"], atol=1e-9)
    assert np.allclose(pn["mu"], pr["mu"], rtol=1e-9)
    # the draws agree in distribution: per region means, variances, zero fractions
    for r in pn["regions"]:
        a, b = yn[tpl == r], yr[tpl == r]
        assert a.mean() == pytest.approx(b.mean(), rel=0.05)
        assert a.var() == pytest.approx(b.var(), rel=0.12)
        assert abs((a == 0).mean() - (b == 0).mean()) < 0.02
    # same seed, same R draws
    assert np.array_equal(yr, sim.pseudo_gene(tissue, tpl, seed=1, engine="r", **kw)[0])


def test_engines_agree_templates_and_homogeneous(tissue):
    _r_or_skip()
    xy = tissue.obsm["spatial"]
    w = sigel.datasets.family_patterns(tissue.obs["u"], tissue.obs["v"])["blobs"]
    img = np.zeros((8, 8), bool)
    img[2:5, 1:6] = True
    for tpl in (w, img, pd.Categorical(tissue.obs["domain"])):
        regs = sim.region_weights(xy, tpl)[1]
        means = {r: 2.0 + 5 * i for i, r in enumerate(regs)}
        _, pn = sim.pseudo_gene(xy, tpl, means=means, seed=0, return_params=True)
        _, pr = sim.pseudo_gene(xy, tpl, means=means, seed=0, engine="r", return_params=True)
        assert pn["regions"] == pr["regions"] and np.allclose(pn["mu"], pr["mu"])
    X = tissue.X[:, :12]
    lib = np.asarray(tissue.X.sum(1)).ravel()
    hn = sim.homogeneous(X, 40, library_size=lib, seed=0)
    hr = sim.homogeneous(X, 40, library_size=lib, seed=0, engine="r")
    assert hn.shape == hr.shape
    assert np.allclose(hn.mean((0, 2)), hr.mean((0, 2)), rtol=0.06)
    assert np.allclose(hn.var((0, 2)), hr.var((0, 2)), rtol=0.2)
    assert np.allclose((hn == 0).mean((0, 2)), (hr == 0).mean((0, 2)), atol=0.02)


def test_local_variance_null_keeps_noise_not_pattern():
    """fit_zinb(graph=...) fits the spot-to-neighbour variance: a patterned gene's controls get its noise
    level, not its pattern's spread; for a homogeneous gene the marginal and local fits agree."""
    import scipy.sparse as sp

    from sigel import tissue

    rng = np.random.default_rng(0)
    r, c = np.divmod(np.arange(900), 30)
    coords = np.c_[c, r].astype(float)
    W = tissue.knn_weights(coords, 6)
    rate = np.where(c < 15, 20.0, 2.0)                              # two halves, 10-fold apart
    X = np.c_[rng.poisson(rate), rng.poisson(np.full(900, 8.0))]
    marg = sigel.sim.fit_zinb(sp.csr_matrix(X))
    loc = sigel.sim.fit_zinb(sp.csr_matrix(X), graph=W)
    # patterned gene: marginal fit sees the halves as overdispersion, the local fit (nearly) Poisson noise
    assert marg["theta"].iloc[0] < 3 and loc["theta"].iloc[0] > 10 * marg["theta"].iloc[0]
    # homogeneous Poisson gene: both (nearly) Poisson, means equal
    assert marg["mu"].iloc[1] == pytest.approx(loc["mu"].iloc[1])
    assert min(marg["theta"].iloc[1], loc["theta"].iloc[1]) > 20
    with pytest.raises(sigel.SigelInputError, match="graph has shape"):
        sigel.sim.fit_zinb(sp.csr_matrix(X), graph=W[:10])


def test_fit_zinb_takes_size_factors_or_library_sizes():
    ad = sigel.datasets.synthetic_tissue(15, seed=1)
    lib = np.asarray(ad.X.sum(axis=1)).ravel().astype(np.float64) + 1.0
    a = sigel.sim.fit_zinb(ad.X, library_size=lib)
    b = sigel.sim.nulls.fit_zinb(ad.X, size_factors=lib / lib.mean())
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(SigelInputError, match="not both"):
        sigel.sim.fit_zinb(ad.X, library_size=lib, size_factors=lib / lib.mean())
    with pytest.raises(SigelInputError, match="size_factors has 3 values"):
        sigel.sim.nulls.fit_zinb(ad.X, size_factors=[1.0, 1.0, 1.0])


def test_registering_the_r_engine_turns_off_tqdms_monitor_thread(monkeypatch):
    """Inside R (reticulate) tqdm's monitor thread slowed every later backend call many times over."""
    import tqdm

    from sigel import _rbridge

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 10)
    monkeypatch.setitem(_rbridge._cache, "engine", None)
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "omp")  # (kept: see the next test)
    _rbridge.register_r_engine(lambda *a, **k: None)
    assert tqdm.tqdm.monitor_interval == 0
    from tqdm.auto import tqdm as auto_tqdm

    assert auto_tqdm.monitor_interval == 0  # the bars sigel shows inherit it


def test_registering_the_r_engine_keeps_numba_off_openmp(monkeypatch):
    """Inside R, numba's OpenMP layer and torch share R's OpenMP runtime; after a numba parallel
    loop (scanpy's Moran's I) torch calls with 2 threads ran many times slower. The R bridge picks
    numba's own thread pool, unless the user chose a layer."""
    import os

    import numba

    from sigel import _rbridge

    monkeypatch.setitem(_rbridge._cache, "engine", None)
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    _rbridge.register_r_engine(lambda *a, **k: None)
    assert os.environ["NUMBA_THREADING_LAYER"] == "workqueue"
    assert numba.config.THREADING_LAYER == "workqueue"
    # a user's own choice is kept
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "omp")
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "omp")
    _rbridge.register_r_engine(lambda *a, **k: None)
    assert os.environ["NUMBA_THREADING_LAYER"] == "omp"
    assert numba.config.THREADING_LAYER == "omp"
