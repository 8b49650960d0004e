"""Panel imputation: metrics, baselines, the GAN, cross-validation.

Real components only: a small `sigel.SIGEL` is fitted on a coarse
full-coverage synthetic sample; the "panel" is a finer sample of the same
gene families (same `seed`, different `sample_seed`) that lacks some genes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import sigel
from sigel import SigelInputError
from sigel.datasets import synthetic_tissue
from sigel.model.generator import ImageGenerator, MeasuredImageBank, MemoryBank, ProjectionDiscriminator
from sigel.tasks.impute import impute, impute_cv, impute_metrics, impute_summary

N_GENES = 150
SMALL_GAN = dict(channels=32, hidden=64)


def _fit_reference(ref, seed):
    """The small model every imputation test reads (the scenario's fit is seed 0)."""
    return sigel.SIGEL(epochs=6, pretrain_epochs=2, embed_dim=16).fit(ref, seed=seed, progress=False, n_threads=1)


@pytest.fixture(scope="module")
def scenario():
    torch.set_num_threads(1)
    ref = synthetic_tissue(N_GENES, shape=(16, 16), seed=0)
    tgt = synthetic_tissue(N_GENES, shape=(32, 32), seed=0, sample_seed=1)
    tgt.obs["total"] = np.asarray(tgt.X.sum(1)).ravel()
    model = _fit_reference(ref, 0)
    rng = np.random.default_rng(0)
    held = tgt.var_names[np.sort(rng.permutation(N_GENES)[:50])]
    panel = tgt[:, ~tgt.var_names.isin(held)].copy()
    im = sigel.GeneImages.from_anndata(tgt, library_size_key="total", patch_size=1, min_spots=0, exclude_prefixes=())
    truth = pd.DataFrame(im.spot_values(list(held)).T.toarray(), index=im.spot_names, columns=list(held))
    return dict(ref=ref, tgt=tgt, model=model, held=held, panel=panel, truth=truth)


def _frame(out, genes):
    return pd.DataFrame(out[:, list(genes)].X, index=out.obs_names, columns=list(genes))


# --------------------------------------------------------------------------- metrics
def _li_reference(t, p):
    """Li et al. 2022 metrics written out gene by gene (their formulas, for comparison)."""
    from scipy import stats

    out = []
    for j in range(t.shape[1]):
        a, b = t[:, j], p[:, j]
        pcc = stats.pearsonr(a, b)[0]
        am, bm = a / a.max(), b / b.max()
        m = min(am.max(), bm.max())
        mu1, mu2 = am.mean(), bm.mean()
        s1, s2 = np.sqrt(((am - mu1) ** 2).mean()), np.sqrt(((bm - mu2) ** 2).mean())
        s12 = ((am - mu1) * (bm - mu2)).mean()
        c1, c2 = (0.01 * m) ** 2, (0.03 * m) ** 2
        c3 = c2 / 2
        ssim = ((2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1) * (2 * s1 * s2 + c2) / (s1**2 + s2**2 + c2)
                * (s12 + c3) / (s1 * s2 + c3))
        rmse = np.sqrt(((stats.zscore(a) - stats.zscore(b)) ** 2).mean())
        pa, pb = a / a.sum(), b / b.sum()
        mm = (pa + pb) / 2
        js = 0.5 * stats.entropy(pa, mm) + 0.5 * stats.entropy(pb, mm)
        out.append((pcc, ssim, rmse, js))
    return np.array(out)


def test_metrics_match_li_formulas():
    rng = np.random.default_rng(1)
    t = rng.gamma(1.0, 1.0, size=(200, 6)) * (rng.random((200, 6)) > 0.3)
    p = 0.5 * t + rng.gamma(1.0, 1.0, size=(200, 6))
    got = impute_metrics(t, p)
    assert list(got.columns) == ["PCC", "SSIM", "RMSE", "JS"]
    np.testing.assert_allclose(got.to_numpy(), _li_reference(t, p), rtol=1e-8, atol=1e-10)
    same = impute_metrics(t, t)
    np.testing.assert_allclose(same[["PCC", "SSIM"]].to_numpy(), 1.0)
    np.testing.assert_allclose(same[["RMSE", "JS"]].to_numpy(), 0.0, atol=1e-12)
    # a constant prediction carries no information: PCC 0, finite everything
    flat = impute_metrics(t, np.ones_like(t))
    assert np.all(flat.PCC == 0) and np.isfinite(flat.to_numpy()).all()


def test_metrics_align_by_name_and_summary_ranks():
    rng = np.random.default_rng(2)
    t = pd.DataFrame(rng.random((80, 5)), index=[f"c{i}" for i in range(80)], columns=list("abcde"))
    good = t + 0.1 * rng.random(t.shape)
    bad = pd.DataFrame(rng.random(t.shape), index=t.index, columns=t.columns)
    shuffled = good.iloc[::-1, ::-1]  # rows and columns permuted: matched by name
    m = impute_metrics(t, {"good": shuffled, "bad": bad})
    assert set(m.method) == {"good", "bad"} and m.index.name == "gene"
    np.testing.assert_allclose(m.loc[m.method == "good", "PCC"].to_numpy(),
                               impute_metrics(t, good).PCC.to_numpy())
    s = impute_summary(m)
    assert s.index[0] == "good" and s.loc["good", "AS"] == 2.0 and s.loc["bad", "AS"] == 1.0
    assert s.loc["good", "n_genes"] == 5
    with pytest.raises(SigelInputError, match="genes not in both"):
        impute_metrics(t, good, genes=["zz"])
    with pytest.raises(SigelInputError, match="same shape"):
        impute_metrics(t.to_numpy(), good.to_numpy()[:, :2])


# ------------------------------------------------------------------------ networks
def test_generator_and_discriminator_shapes():
    mask = np.zeros((20, 28), bool)
    mask[2:18, 3:25] = True
    g = ImageGenerator(8, mask, hidden=32, n_prototypes=6, channels=16)
    z = torch.randn(5, 8)
    img, att = g(z, return_attention=True)
    assert img.shape == (5, 20, 28)
    assert float(img.detach().min()) >= 0.0 and float(img.detach().max()) <= 1.0
    assert torch.all(img[:, ~torch.from_numpy(mask)] == 0)
    np.testing.assert_allclose(att.sum(1).detach().numpy(), 1.0, rtol=1e-5)
    d = ProjectionDiscriminator(8, mask)
    assert d(img, z).shape == (5,)
    bank = MemoryBank(16, 4)
    out, a = bank(torch.randn(3, 16))
    assert out.shape == (3, 16) and a.shape == (3, 4)


def test_generator_with_prior_starts_at_the_prior():
    mask = np.zeros((20, 28), bool)
    mask[2:18, 3:25] = True
    g = ImageGenerator(8, mask, hidden=32, n_prototypes=6, channels=16, prior=True)
    gen = torch.Generator().manual_seed(0)
    prior = torch.rand(5, 20, 28, generator=gen) * torch.from_numpy(mask)
    out = g(torch.randn(5, 8, generator=gen), prior=prior)
    # sigmoid(logit(p)) in float32 through the vectorised CPU kernels: exact to ~1e-5, not 1e-6
    torch.testing.assert_close(out, prior.clamp(1e-4, 1 - 1e-4) * torch.from_numpy(mask), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="needs"):
        g(torch.randn(5, 8))
    with pytest.raises(ValueError, match="takes no"):
        ImageGenerator(8, mask, hidden=32, channels=16)(torch.randn(5, 8), prior=prior)


def test_measured_image_bank_reads_a_softmax_of_cosines_and_leaves_out():
    keys = torch.randn(6, 4)
    values = torch.rand(6, 10)
    bank = MeasuredImageBank(keys, values)
    z = torch.randn(3, 4)
    img, att = bank(z)
    cos = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(keys, dim=1).t()
    want = torch.softmax(cos / MeasuredImageBank.TAU, 1)
    torch.testing.assert_close(att, want)
    torch.testing.assert_close(img, want @ values)
    _, att_loo = bank(z, exclude=torch.tensor([0, 5, 2]))
    assert att_loo[0, 0] == 0 and att_loo[1, 5] == 0 and att_loo[2, 2] == 0
    torch.testing.assert_close(att_loo.sum(1), torch.ones(3))


def test_neighbour_prior_gan_starts_from_the_measured_image_readout(scenario):
    """With (almost) no training the prior-refining generator returns the untrained bank's read-out:
    every measured gene's image weighted by exp(cosine of standardised embeddings / TAU)."""
    s = scenario
    kw = dict(genes=list(s["held"]), library_size_key="total", seed=0, n_threads=1, progress=False)
    out = impute(s["model"], s["panel"], method="gan", neighbour_prior=True, n_steps=1, lr=1e-12, **SMALL_GAN, **kw)
    gan = _frame(out, s["held"])
    measured = out.var_names[~out.var["imputed"].to_numpy(bool)]
    Z = s["model"].embeddings_
    Z = (Z - Z.mean(0)) / Z.std(0, ddof=0)
    Z = Z.div(np.linalg.norm(Z, axis=1), axis=0)
    w = np.exp(Z.loc[list(s["held"])].to_numpy() @ Z.loc[list(measured)].to_numpy().T / MeasuredImageBank.TAU)
    w /= w.sum(1, keepdims=True)
    want = _frame(out, measured).to_numpy() @ w.T
    np.testing.assert_allclose(gan.to_numpy(), want, atol=2e-4)
    knn = _frame(impute(s["model"], s["panel"], method="knn", **kw), s["held"])
    assert np.abs(gan.to_numpy() - knn.to_numpy()).max() > 1e-2  # a different read-out from the kNN baseline


# ------------------------------------------------------------------------- impute
def test_gan_beats_knn_and_mean_on_held_out_panel_genes(scenario):
    """Acceptance: held-out panel genes; GAN > kNN and > mean image on median PCC, judged over three fits.

    On this 16 x 16 reference the GAN's lead over the kNN read-out is a few thousandths per fit (seeds 0-2:
    +0.004 / +0.018 / +0.015 with the box scaffold, -0.005 / +0.024 / +0.003 with the PCA scaffold), so one
    fit's sign is a lottery of its seed; the procedure is judged on the median over the fixture's fit and
    two more seeds, each imputed with the same fixed GAN seed.
    """
    s = scenario
    models = [s["model"]] + [_fit_reference(s["ref"], seed) for seed in (1, 2)]
    runs = []
    for model in models:
        preds = {}
        for meth in ("gan", "knn", "mean"):
            out = impute(model, s["panel"], genes=list(s["held"]), method=meth, library_size_key="total",
                         seed=0, n_steps=200, n_threads=1, progress=False, **SMALL_GAN)
            preds[meth] = _frame(out, s["held"])
        runs.append(impute_summary(impute_metrics(s["truth"], preds))["PCC"])
    pcc = pd.DataFrame(runs)
    lead = pcc["gan"] - pcc["knn"]
    assert lead.median() > 0, pcc
    assert (pcc["gan"] > pcc["mean"]).all(), pcc
    assert pcc["gan"].median() >= 0.15, pcc


def test_impute_output_structure_and_inputs_untouched(scenario):
    s = scenario
    panel = s["panel"]
    before = panel.X.copy()
    out = impute(s["model"], panel, method="knn", library_size_key="total", progress=False)
    assert (panel.X != before).nnz == 0
    n_imp = int(out.var["imputed"].sum())
    assert n_imp == len(s["held"]) and set(out.var_names[out.var["imputed"]]) == set(s["held"])
    assert out.n_vars == n_imp + panel.n_vars and out.n_obs == panel.n_obs
    assert list(out.obs_names) == list(panel.obs_names)
    assert "spatial" in out.obsm
    conf = out.var.loc[out.var["imputed"], "confidence"]
    assert conf.between(0, 1).all() and out.var.loc[~out.var["imputed"], "confidence"].isna().all()
    assert np.isfinite(out.X).all() and out.X.min() >= 0 and out.X.max() <= 1
    # measured genes are their own measured values (target image scale)
    im = sigel.GeneImages.from_anndata(panel, library_size_key="total", patch_size=1, min_spots=0,
                                       exclude_prefixes=())
    np.testing.assert_allclose(out[:, list(panel.var_names)].X, im.spot_values(list(panel.var_names)).T.toarray(),
                               rtol=1e-6)
    info = out.uns["sigel_impute"]
    assert info["n_shared"] == panel.n_vars and info["params"]["method"] == "knn"
    # genes the panel measures are returned as measured, never imputed
    out2 = impute(s["model"], panel, genes=[s["held"][0], panel.var_names[0]], method="mean",
                  library_size_key="total", progress=False)
    assert out2.var.loc[s["held"][0], "imputed"] and not out2.var.loc[panel.var_names[0], "imputed"]


def test_case_insensitive_matching_reports_unmatched(scenario):
    s = scenario
    panel = s["panel"].copy()
    panel.var_names = [g.upper() for g in panel.var_names]
    extra = s["panel"][:, :1].copy()
    extra.var_names = ["NOT_EMBEDDED"]
    import anndata as ad

    panel = ad.concat([panel, extra], axis=1, merge="first")
    panel.obs["total"] = s["panel"].obs["total"].to_numpy()
    panel.obsm["spatial"] = s["panel"].obsm["spatial"]
    out = impute(s["model"], panel, genes=[g.upper() for g in s["held"][:5]], method="knn",
                 library_size_key="total", progress=False)
    info = out.uns["sigel_impute"]
    assert info["n_shared"] == s["panel"].n_vars
    assert info["unmatched"] == ["NOT_EMBEDDED"]
    assert list(out.var_names[out.var["imputed"]]) == list(s["held"][:5])  # reference names
    assert "NOT_EMBEDDED" in out.var_names


def test_free_coordinate_target_and_reproducibility(scenario):
    s = scenario
    free = synthetic_tissue(N_GENES, shape=(30, 30), geometry="free", n_cells=900, seed=0, sample_seed=3)
    free = free[:, ~free.var_names.isin(s["held"])].copy()
    # bitwise reproducibility holds for a fixed thread count (docs/robustness.md); the automatic count
    # follows the machine's load, which may change between the two calls
    kw = dict(genes=list(s["held"][:10]), method="gan", geometry="free", resolution=24, n_steps=15, seed=3,
              n_threads=1, progress=False, **SMALL_GAN)
    a = impute(s["model"], free, **kw)
    b = impute(s["model"], free, **kw)
    assert a.uns["sigel_impute"]["params"]["geometry"] == "free"
    assert max(a.uns["sigel_impute"]["params"]["image_shape"]) == 24
    np.testing.assert_array_equal(a.X, b.X)
    c = impute(s["model"], free, **{**kw, "seed": 4})
    assert not np.array_equal(a.X, c.X)
    hist = a.uns["sigel_impute"]["history"]
    assert list(hist.columns[:3]) == ["step", "reconstruction", "adversarial_g"]
    assert (hist["prior_tau"] > 0).all()  # the bank's temperature, trained from 0.2
    assert hist["prior_tau"].iloc[-1] != pytest.approx(MeasuredImageBank.TAU, abs=1e-6)


def test_finetune_encoder_and_pixel_budget(scenario):
    s = scenario
    emb_before = s["model"].embeddings_.copy()
    w_before = [p.detach().clone() for p in s["model"].module_.parameters()]
    out = impute(s["model"], s["panel"], genes=list(s["held"][:4]), library_size_key="total", n_steps=6,
                 finetune_encoder=True, pixel_budget=2 * 32 * 32, seed=0, progress=False, **SMALL_GAN)
    assert out.var["imputed"].sum() == 4 and np.isfinite(out.X).all()
    pd.testing.assert_frame_equal(s["model"].embeddings_, emb_before)
    assert all(torch.equal(a, b) for a, b in zip(w_before, s["model"].module_.parameters()))
    with pytest.raises(SigelInputError, match="finetune_encoder"):
        impute(s["model"].embeddings_, s["panel"], genes=list(s["held"][:2]), n_steps=2, finetune_encoder=True,
               progress=False)


def test_impute_cv_folds(scenario):
    s = scenario
    cv = impute_cv(s["model"], s["panel"], k=3, method=["knn", "mean"], library_size_key="total", seed=0,
                   progress=False)
    assert cv.index.name == "gene"
    assert set(cv.method) == {"knn", "mean"} and sorted(cv.fold.unique()) == [0, 1, 2]
    assert len(cv) == 2 * s["panel"].n_vars
    assert set(cv.index) == set(s["panel"].var_names)
    # every gene is scored once per method, and both methods saw the same folds
    f = cv.reset_index().pivot(index="gene", columns="method", values="fold")
    assert (f["knn"] == f["mean"]).all()
    summ = impute_summary(cv)
    assert set(summ.index) == {"knn", "mean"}
    g = impute_cv(s["model"], s["panel"], k=2, method="gan", library_size_key="total", seed=0, n_steps=5,
                  genes=list(s["panel"].var_names[:6]), progress=False, **SMALL_GAN)
    assert len(g) == 6 and np.isfinite(g[["PCC", "SSIM", "RMSE", "JS"]].to_numpy()).all()


def test_input_errors(scenario):
    s = scenario
    with pytest.raises(SigelInputError, match="method"):
        impute(s["model"], s["panel"], method="nope")
    with pytest.raises(SigelInputError, match="cannot be imputed"):
        impute(s["model"], s["panel"], genes=["no_such_gene"], method="knn", progress=False)
    other = s["panel"].copy()
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    with pytest.raises(SigelInputError, match="match the reference"):
        impute(s["model"], other, method="knn", progress=False)
    with pytest.raises(SigelInputError, match="folds"):
        impute_cv(s["model"], s["panel"], k=1, method="knn")
    with pytest.raises(SigelInputError, match="unknown options"):
        impute_cv(s["model"], s["panel"], k=2, method="knn", n_step=3)
    with pytest.raises(SigelInputError, match="not fitted"):
        impute(sigel.SIGEL(), s["panel"], method="knn")


def test_public_registry():
    for name in ("impute", "impute_cv", "impute_metrics", "impute_summary"):
        assert callable(getattr(sigel.tl, name))


def test_impute_maps_plot(scenario):
    import matplotlib.pyplot as plt

    s = scenario
    out = impute(s["model"], s["panel"], genes=list(s["held"][:3]), method="knn", library_size_key="total",
                 progress=False)
    fig = sigel.pl.impute_maps(out, truth=s["truth"])
    assert len(fig.axes) == 6
    plt.close(fig)
    with pytest.raises(SigelInputError, match="not in the imputed"):
        sigel.pl.impute_maps(out, genes=["nope"])
