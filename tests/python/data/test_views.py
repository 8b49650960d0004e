"""Count-thinned views and the sampling-noise invariance of the gene vectors."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import sigel
from sigel.data.views import CountViews
from sigel.model.diagnostics import detection_rate, effective_rank, ridge_cv_r2
from sigel.model.refine import view_invariance_loss


def test_full_keep_reproduces_training_images_and_thinning_keeps_level():
    adata = sigel.datasets.synthetic_tissue(60, seed=3, depth=400.0)
    images = sigel.GeneImages.from_anndata(adata)
    views = CountViews.from_anndata(adata, images)
    idx = np.arange(images.n_genes)
    x = views.batch(idx, torch.ones(len(idx)))
    torch.testing.assert_close(x, images.to_tensor(idx), atol=1e-5, rtol=0)
    # thinning to half depth keeps the normalised level (counts / (p * library)): the mean in-tissue
    # value of a thinned view stays within a few percent of the original (log1p bends it slightly down)
    g = torch.Generator().manual_seed(0)
    x5 = views.batch(idx, torch.full((len(idx),), 0.5), generator=g)
    m = torch.from_numpy(images.mask)
    ratio = x5[:, 0][:, m].sum() / x[:, 0][:, m].sum()
    assert 0.8 < float(ratio) < 1.05
    # and it really resamples: fewer non-zero pixels, independent draws differ
    assert int((x5[:, 0] > 0).sum()) < int((x[:, 0] > 0).sum())
    x5b = views.batch(idx, torch.full((len(idx),), 0.5), generator=g)
    assert not torch.equal(x5, x5b)


def test_split_views_partition_the_counts():
    # noise2noise pairs: every count goes to exactly one of the two views. Without log1p and
    # scaling a view's pixel is count * factor / depth, so keep * A + (1 - keep) * B is the full image.
    adata = sigel.datasets.synthetic_tissue(40, seed=2, depth=300.0)
    images = sigel.GeneImages.from_anndata(adata, log1p=False, scale=None)
    views = CountViews.from_anndata(adata, images)
    idx = np.arange(images.n_genes)
    keep = torch.linspace(0.2, 0.8, len(idx))
    a, b = views.split(idx, keep, generator=torch.Generator().manual_seed(0))
    full = views.batch(idx, torch.ones(len(idx)))
    torch.testing.assert_close(full, images.to_tensor(idx), atol=1e-4, rtol=1e-5)  # unscaled images: no clip
    k = keep[:, None, None]
    torch.testing.assert_close(k * a[:, 0] + (1 - k) * b[:, 0], full[:, 0], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(a[:, 1], full[:, 1])
    # both halves are real resamples: neither is the full image nor the other half
    assert not torch.allclose(a[:, 0], full[:, 0]) and not torch.allclose(a[:, 0], b[:, 0])
    # and the same generator state gives the same split
    a2, b2 = views.split(idx, keep, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_split_denoise_trains_and_is_refused_when_misspelt():
    adata = sigel.datasets.synthetic_tissue(40, seed=0)
    kw = dict(epochs=2, pretrain_epochs=1, embed_dim=8, width=16, depth=1, batch_size=16)
    with pytest.raises(sigel.SigelInputError, match="denoise"):
        sigel.SIGEL(denoise="noise2noise", **kw)
    fit = dict(seed=0, n_threads=1, progress=False)  # same seed and thread count: bitwise the same
    z1 = sigel.SIGEL(denoise="split", **kw).fit(adata, **fit).embeddings_
    z2 = sigel.SIGEL(denoise="split", **kw).fit(adata, **fit).embeddings_
    z0 = sigel.SIGEL(denoise=False, **kw).fit(adata, **fit).embeddings_
    assert np.isfinite(z1.to_numpy()).all()
    pd.testing.assert_frame_equal(z1, z2)
    assert not np.allclose(z1.to_numpy(), z0.to_numpy())


def test_views_refuse_non_counts_and_other_spots():
    adata = sigel.datasets.synthetic_tissue(30, seed=1)
    images = sigel.GeneImages.from_anndata(adata)
    logged = adata.copy()
    logged.X = sp.csr_matrix(np.log1p(logged.X.toarray()))
    with pytest.raises(sigel.SigelInputError, match="integer counts"):
        CountViews.from_anndata(logged, images)
    with pytest.raises(sigel.SigelInputError, match="spots"):
        CountViews.from_anndata(adata[:-1].copy(), images)


def test_invariance_loss_prefers_matching_views():
    rng = torch.Generator().manual_seed(0)
    bank_raw = torch.randn(50, 8, generator=rng)
    center = torch.zeros(8)
    bank = torch.nn.functional.normalize(bank_raw, dim=1)
    idx = torch.arange(10)
    z1 = bank_raw[:10] + 0.05 * torch.randn(10, 8, generator=rng)
    same = view_invariance_loss(z1, bank_raw[:10], idx, bank, center, 0.1)
    other = view_invariance_loss(z1, bank_raw[10:20], idx, bank, center, 0.1)
    assert float(same) < float(other)


def test_diagnostics_effective_rank_and_ridge():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(3000, 16, generator=g)
    assert effective_rank(Z) > 15.0
    line = Z[:, :1] * torch.ones(1, 16)
    assert effective_rank(line) < 1.01
    y = Z[:, 0].numpy() * 2 + 1
    assert ridge_cv_r2(Z, y) > 0.99
    assert abs(ridge_cv_r2(Z, np.random.default_rng(0).normal(size=3000))) < 0.02


# --------------------------------------------------------------- the trained space (synthetic tissue)
DATA = dict(n_genes=300, shape=(24, 24), depth=300.0, dispersion=3.0, fold_change=6.0, seed=0)


@pytest.fixture(scope="module")
def fitted():
    adata = sigel.datasets.synthetic_tissue(**DATA)
    model = sigel.SIGEL(n_contexts=6, epochs=24, spread_weight=1.0).fit(adata, progress=False, n_threads=1, seed=0)
    return adata, model


def test_history_tracks_rank_and_detection(fitted):
    _, model = fitted
    h = model.history_
    assert {"erank", "r2_detection", "spread"} <= set(h.columns)
    assert h["erank"].notna().all() and (h["erank"] > 1).all()


def test_thinned_copies_of_a_gene_stay_together(fitted):
    adata, model = fitted
    fam = adata.var["family"].astype(str)
    rng = np.random.default_rng(1)
    genes = [g for g in adata.var_names if fam[g] != "none" and g in model.embeddings_.index][:12]
    X = adata[:, genes].X.toarray().astype(np.int64)
    copies = {}
    for tag in ("a", "b"):  # two independent binomial thinnings to half depth
        copies[tag] = rng.binomial(X, 0.5)
    new = np.hstack([adata.X.toarray(), copies["a"], copies["b"]]).astype(np.float32)
    names = list(adata.var_names) + [f"{g}_a" for g in genes] + [f"{g}_b" for g in genes]
    obs = adata.obs.copy()
    big = ad.AnnData(sp.csr_matrix(new), obs=obs, var=pd.DataFrame(index=names))
    big.obsm["spatial"] = adata.obsm["spatial"]
    E = model.transform(big)
    U = E.to_numpy(np.float64)
    U = U - U[: adata.n_vars].mean(0)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    S = pd.DataFrame(U @ U.T, index=E.index, columns=E.index)
    hits = 0
    for g in genes:
        others = [h for h in adata.var_names if fam[h] not in (fam[g], "none") and h in S.columns]
        hits += S.loc[f"{g}_a", f"{g}_b"] > S.loc[f"{g}_a", others].max()
    # each copy holds half the counts of an already shallow gene; 11 of 12 leaves room for one
    # gene whose copies are too sparse to place, while an encoder ignorant of the pattern gets ~0
    assert hits >= 11


def test_detection_rate_not_readable(fitted):
    """With the default Gaussian input filter a ridge read-out no longer recovers detection rate
    (R2 ~0.3 with the unfiltered input, ~0.02 with the filter)."""
    _, model = fitted
    assert model.init_params_["input_norm"] == "gaussian"
    det = pd.Series(detection_rate(model.images_), index=model.images_.genes)
    r2 = ridge_cv_r2(model.embeddings_.loc[det.index].to_numpy(), det.to_numpy())
    assert r2 < 0.3


# ---------------------------------------------------------------- depth-matched (rarefied) images
def test_rarefy_keeps_counts_and_resolves_auto_to_the_median_total():
    adata = sigel.datasets.synthetic_tissue(50, seed=4, depth=300.0)
    plain = sigel.GeneImages.from_anndata(adata)
    assert plain.counts is None and "rarefy" not in plain.settings
    images = sigel.GeneImages.from_anndata(adata, rarefy="auto")
    totals = np.asarray(images.counts.sum(1)).ravel()
    assert images.counts.shape == (images.n_genes, adata.n_obs)
    assert images.settings["rarefy"] == int(np.median(totals))
    # the stored images are not thinned, and the option travels with the image options
    assert (images.values != plain.values).nnz == 0
    assert sigel.GeneImages.image_options(images.settings)["rarefy"] == images.settings["rarefy"]
    sub = images.subset(images.genes[[3, 1]])
    assert (sub.counts != images.counts[[3, 1]]).nnz == 0
    for bad in (0, -3, 2.5, "median", True):
        with pytest.raises(sigel.SigelInputError, match="rarefy"):
            sigel.GeneImages.from_anndata(adata, rarefy=bad)


def test_rarefied_draws_cap_depth_and_leave_shallow_genes_whole():
    from sigel.data.views import RarefiedImages

    adata = sigel.datasets.synthetic_tissue(50, seed=5, depth=300.0)
    images = sigel.GeneImages.from_anndata(adata, rarefy="auto")
    T = images.settings["rarefy"]
    totals = np.asarray(images.counts.sum(1)).ravel()
    shallow, deep = np.flatnonzero(totals <= T), np.flatnonzero(totals > 2 * T)
    assert len(shallow) and len(deep)
    r = RarefiedImages(images, seed=0)
    # a gene with at most T counts is read whole: its draw is its image
    torch.testing.assert_close(r.to_tensor(shallow), images.to_tensor(shallow), atol=1e-5, rtol=0)
    # a deep gene is read at depth ~T: fewer detected pixels than its image, a fresh draw each read
    a, b = r.to_tensor(deep), r.to_tensor(deep)
    assert int((a[:, 0] > 0).sum()) < int((images.to_tensor(deep)[:, 0] > 0).sum())
    assert not torch.equal(a, b)
    # the thinned counts total about T (binomial: mean T, sd < sqrt(T)); checked on the counts themselves
    g = torch.Generator().manual_seed(1)
    C = torch.from_numpy(images.counts[deep].toarray())
    drawn = torch.binomial(C, r._keep[deep][:, None].expand_as(C), generator=g).sum(1)
    assert float((drawn - T).abs().max()) < 5 * np.sqrt(T)
    # reseeding restarts the draws
    r.reseed(7)
    c = r.to_tensor(deep)
    r.reseed(7)
    assert torch.equal(c, r.to_tensor(deep))
    with pytest.raises(sigel.SigelInputError, match="rarefy"):
        RarefiedImages(sigel.GeneImages.from_anndata(adata))


def test_rarefied_model_transform_matches_fit_and_refuses_images_without_counts(tmp_path):
    adata = sigel.datasets.synthetic_tissue(80, seed=6)
    kw = dict(epochs=2, n_contexts=3, embed_dim=8, rarefy="auto", rarefy_draws=2)
    m = sigel.SIGEL(**kw).fit(adata, n_threads=1, progress=False)
    T = m.image_options_["rarefy"]
    assert isinstance(T, int) and T >= 1
    E = m.transform(adata)
    np.testing.assert_array_equal(E.to_numpy(), m.embeddings_.to_numpy())
    # genes at most T deep are the same image in every draw: embedded once (from the stored images),
    # and that vector is what any single draw gives them
    from sigel.data.views import rarefied
    from sigel.train.trainer import embed_all
    imgs = rarefied(m.images_for(adata), seed=3)
    whole = imgs.read_whole
    assert whole.any() and not whole.all()
    one_draw = embed_all(m.module_, imgs).numpy()
    np.testing.assert_allclose(E.loc[np.asarray(imgs.genes)[whole]].to_numpy(), one_draw[whole], atol=1e-4)
    assert not np.allclose(E.loc[np.asarray(imgs.genes)[~whole]].to_numpy(), one_draw[~whole], atol=1e-4)
    # the sparse token route reads the same draw as the dense images
    imgs.reseed(4)
    routed = embed_all(m.module_, imgs).numpy()
    imgs.reseed(4)
    m.module_.eval()
    with torch.no_grad():
        dense = m.module_.embed(imgs.to_tensor(np.arange(imgs.n_genes))).numpy()
    np.testing.assert_allclose(routed, dense, atol=1e-4)
    m.save(tmp_path / "m")
    back = sigel.SIGEL.load(tmp_path / "m")
    assert back.image_options_["rarefy"] == T
    np.testing.assert_array_equal(back.transform(adata).to_numpy(), E.to_numpy())
    # same seed, same vectors
    again = sigel.SIGEL(**kw).fit(adata, n_threads=1, progress=False)
    np.testing.assert_array_equal(again.embeddings_.to_numpy(), m.embeddings_.to_numpy())
    with pytest.raises(sigel.SigelInputError, match="rarefy"):
        m.embed_images(sigel.GeneImages.from_anndata(adata))
    # the model decides how images are read: a plain model reads images that keep counts whole
    plain = sigel.SIGEL(**{**kw, "rarefy": None}).fit(adata, n_threads=1, progress=False)
    counted = sigel.GeneImages.from_anndata(adata, rarefy="auto")
    np.testing.assert_array_equal(plain.embed_images(counted), plain.embeddings_.to_numpy())
    # SIGEL(rarefy=<number>) is not silently dropped where there are no counts to draw from: it raises
    fixed = {**kw, "rarefy": 20}
    with pytest.raises(sigel.SigelInputError, match="rarefy"):
        sigel.SIGEL(**fixed).fit_images(sigel.GeneImages.from_anndata(adata), n_threads=1, progress=False)
    with pytest.raises(sigel.SigelInputError, match="rarefy"):
        sigel.SIGEL(**fixed).fit([adata, adata], sample_names=["a", "b"], n_threads=1, progress=False)
    with pytest.raises(sigel.SigelInputError, match="rarefy"):
        sigel.SIGEL(rarefy=0)


def test_rarefy_auto_turns_itself_off_with_a_warning_where_it_cannot_draw():
    """'auto' means depth matching where the data allow it: elsewhere a warning says it is off, and the
    model reads (and transforms) the full images, exactly like rarefy=None."""
    adata = sigel.datasets.synthetic_tissue(60, seed=7)
    kw = dict(epochs=1, n_contexts=3, embed_dim=8, rarefy="auto")
    plain_kw = {**kw, "rarefy": None}
    # prebuilt images without counts
    images = sigel.GeneImages.from_anndata(adata)
    with pytest.warns(UserWarning, match="rarefy='auto'.*keep no counts"):
        m = sigel.SIGEL(**kw).fit_images(images, n_threads=1, progress=False)
    assert "rarefy" not in m.image_options_
    ref = sigel.SIGEL(**plain_kw).fit_images(images, n_threads=1, progress=False)
    np.testing.assert_array_equal(m.embeddings_.to_numpy(), ref.embeddings_.to_numpy())
    # values that are not counts (counts=False): nothing to draw from
    lognorm = adata.copy()
    lognorm.X = np.log1p(lognorm.X.astype(np.float64))
    with pytest.warns(UserWarning, match="rarefy='auto'.*not raw counts"):
        m = sigel.SIGEL(**kw).fit(lognorm, counts=False, normalize=False, log1p=False, n_threads=1, progress=False)
    assert "rarefy" not in m.image_options_
    # several samples
    with pytest.warns(UserWarning, match="rarefy='auto'.*several samples"):
        m = sigel.SIGEL(**kw).fit([adata, adata], sample_names=["a", "b"], n_threads=1, progress=False)
    assert "rarefy" not in m.image_options_


def test_transform_draws_and_the_hdf5_stream_read_what_transform_reads(tmp_path):
    """`transform_to_h5` gives `transform`'s vectors for a model that reads depth-matched draws (it read
    whole images before), and `draws` trades noise for speed on the deep genes only."""
    from sigel.data.views import rarefied
    from sigel.io import read_results_h5, transform_to_h5

    adata = sigel.datasets.synthetic_tissue(80, seed=6)
    m = sigel.SIGEL(epochs=2, n_contexts=3, embed_dim=8, rarefy="auto", rarefy_draws=2).fit(
        adata, n_threads=1, progress=False)
    E = m.transform(adata)
    got = read_results_h5(transform_to_h5(m, adata, tmp_path / "t.h5", batch_size=16, progress=False))
    assert got["embeddings"].index.equals(E.index)
    np.testing.assert_array_equal(got["embeddings"].to_numpy(), E.to_numpy())
    np.testing.assert_allclose(got["memberships"].to_numpy(), m.predict_memberships(E).to_numpy(), atol=1e-6)
    # the model's own count of draws is the default; one draw changes only the genes deeper than the common depth
    np.testing.assert_array_equal(m.transform(adata, draws=2).to_numpy(), E.to_numpy())
    one = m.transform(adata, draws=1)
    whole = rarefied(m.images_for(adata)).read_whole
    assert whole.any() and not whole.all()
    np.testing.assert_array_equal(one.to_numpy()[whole], E.to_numpy()[whole])
    assert not np.allclose(one.to_numpy()[~whole], E.to_numpy()[~whole], atol=1e-4)
    h5_one = read_results_h5(transform_to_h5(m, adata, tmp_path / "one.h5", draws=1, progress=False))
    np.testing.assert_array_equal(h5_one["embeddings"].to_numpy(), one.to_numpy())
    with pytest.raises(sigel.SigelInputError, match="draws"):
        m.transform(adata, draws=0)
