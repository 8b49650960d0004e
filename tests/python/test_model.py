"""Tests of the SIGEL model layer: network steps, refinement pieces, trainer and facade.

Everything runs on tiny synthetic tissues with a small network, on one CPU
thread, so the file takes seconds. The planted-family quality test is in
``test_model_quality.py``.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import sigel
from sigel import SIGEL, SigelInputError
from sigel.model.mae import MaskedAutoencoder, sincos_pos_embed_2d
from sigel.model.refine import prototype_contrastive_loss, scaffold_contrastive_loss, select_confident
from sigel.model.scaffold import image_knn_graph
from sigel.train.trainer import gene_batches, lr_at

# a small, fast configuration (the defaults are tuned for real data)
FAST = dict(epochs=4, pretrain_epochs=2, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
            batch_size=32, n_contexts=3)
FIT = dict(progress=False, n_threads=1, seed=0)


@pytest.fixture(scope="module")
def adata():
    return sigel.datasets.synthetic_tissue(60, n_families=3, shape=(16, 16), seed=0)


@pytest.fixture(scope="module")
def model(adata):
    return SIGEL(**FAST).fit(adata, **FIT)


def _batch(mask_list, seed=0):
    rng = np.random.default_rng(seed)
    xs = []
    for m in mask_list:
        m = m.astype(np.float32)
        xs.append(np.stack([rng.random(m.shape).astype(np.float32) * m, m]))
    return torch.from_numpy(np.stack(xs))


# ----------------------------------------------------------------- Module I
def test_sincos_positions_shape_and_grid_dependence():
    pe = sincos_pos_embed_2d(3, 5, 16)
    assert pe.shape == (15, 16)
    assert torch.isfinite(pe).all()
    # row-major: patch (1, 2) is row 7 and differs from (2, 1)
    assert not torch.allclose(pe[1 * 5 + 2], pe[2 * 5 + 1])
    with pytest.raises(ValueError):
        sincos_pos_embed_2d(2, 2, 6)


def test_masking_hides_only_tissue_patches():
    torch.manual_seed(0)
    m = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8)
    mask = np.zeros((16, 16), bool)
    mask[:8, :12] = True  # 2 x 3 = 6 tissue patches of 16
    x = _batch([mask] * 4)
    tokens, tissue, grid = m.patchify(x)
    assert tokens.shape == (4, 16, 16) and grid == (4, 4)
    assert int(tissue[0].sum()) == 6
    tb = m.mask_tissue_patches(tissue, 0.5, torch.Generator().manual_seed(1), grid)
    assert tb.valid is None and tb.ids.shape == (4, 3)
    # visible and hidden patches are all in tissue, disjoint, and cover the tissue
    for b in range(4):
        vis = set(tb.ids[b].tolist())
        hid = set(torch.nonzero(tb.masked[b]).ravel().tolist())
        tis = set(torch.nonzero(tissue[b]).ravel().tolist())
        assert vis <= tis and hid <= tis and not (vis & hid) and (vis | hid) == tis
    out = m(x, generator=torch.Generator().manual_seed(2))
    assert out["pred"].shape == (4, 16, 16) and out["z"].shape == (4, 8)
    assert torch.isfinite(out["loss"])


def test_embed_is_padding_invariant_and_skips_decoder(monkeypatch):
    torch.manual_seed(0)
    m = MaskedAutoencoder(patch_size=4, width=16, depth=2, n_heads=2, decoder_width=16, embed_dim=8).eval()
    a = np.zeros((16, 16), bool)
    a[2:14, 2:14] = True
    b = np.zeros((16, 16), bool)
    b[:5, :5] = True  # fewer tissue patches -> padded slots in a mixed batch
    x = _batch([a, b], seed=3)

    def boom(*args, **kwargs):
        raise AssertionError("embed must not run the decoder")

    monkeypatch.setattr(m, "decode", boom)
    with torch.no_grad():
        both = m.embed(x)
        one = torch.cat([m.embed(x[:1]), m.embed(x[1:])])
    assert torch.allclose(both, one, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_attention_equals_the_fused_kernel(monkeypatch, masked):
    import torch.nn.functional as F

    import sigel.model.mae as mae

    g = torch.Generator().manual_seed(0)
    B, h, L, d = 7, 2, 13, 4
    q, k, v = (torch.randn(B, h, L, d, generator=g) for _ in range(3))
    key_mask = None
    if masked:  # every gene keeps at least its first key
        key_mask = (torch.rand(B, 1, 1, L, generator=g) > 0.4)
        key_mask[..., 0] = True
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2)
    monkeypatch.setattr(mae, "_ATTN_CHUNK", 3 * h * L * L)  # chunks of 3 genes: 3 + 3 + 1
    got = mae.cpu_attention(q, k, v, key_mask)
    assert got.shape == (B, L, h, d)
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def test_encoder_gives_the_same_vectors_with_and_without_gradients():
    # training passes (gradients) take torch's fused attention; embedding passes on CPU the chunked one
    torch.manual_seed(0)
    m = MaskedAutoencoder(patch_size=4, width=16, depth=2, n_heads=2, decoder_width=16, embed_dim=8).eval()
    a = np.zeros((16, 16), bool)
    a[2:14, 2:14] = True
    b = np.zeros((16, 16), bool)
    b[:5, :9] = True  # a mixed batch: masked key slots
    x = _batch([a, b, a], seed=4)
    with_grad = m.embed(x)
    assert with_grad.requires_grad
    with torch.inference_mode():
        without = m.embed(x)
    assert torch.allclose(with_grad.detach(), without, atol=1e-5)


def test_input_standardisation_is_per_image_over_tissue():
    m = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8)
    mask = np.zeros((8, 8), bool)
    mask[1:7, 2:8] = True
    x = _batch([mask, mask], seed=4)
    x[1, 0] = x[0, 0] * 10.0  # same pattern, 10x the level
    z = m.normalize_input(x)
    tis = torch.from_numpy(mask)
    v = z[:, 0][:, tis]
    assert torch.allclose(v.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(v.var(1, unbiased=False), torch.ones(2), atol=1e-4)
    assert torch.allclose(z[0], z[1], atol=1e-5)  # level-invariant
    assert (z[:, 0][:, ~tis] == 0).all() and torch.equal(z[:, 1], x[:, 1])


@pytest.mark.parametrize("norm", ["smooth", "gaussian"])
def test_smoothed_input_is_the_masked_average_of_tissue_neighbours(norm):
    """The separable filter equals a direct 2-d masked (normalised) average, background ignored."""
    m = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
                          input_norm=norm, smooth_sigma=1.5)
    mask = np.zeros((12, 12), bool)
    mask[2:10, 1:11] = True
    x = _batch([mask], seed=5)
    z = m.normalize_input(x)[0, 0]
    v, w = x[0, 0].double(), x[0, 1].double()
    if norm == "smooth":
        k2 = torch.ones(3, 3, dtype=torch.float64)
    else:
        r = int(np.ceil(3 * 1.5))
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-0.5 * (t / 1.5) ** 2)
        k2 = g[:, None] * g[None, :]
    num = torch.nn.functional.conv2d((v * w)[None, None], k2[None, None], padding=k2.shape[-1] // 2)[0, 0]
    den = torch.nn.functional.conv2d(w[None, None], k2[None, None], padding=k2.shape[-1] // 2)[0, 0]
    ref = num / den.clamp(min=1e-6) * w
    tis = torch.from_numpy(mask)
    ref = (ref - ref[tis].mean()) / ref[tis].std(unbiased=False)
    assert torch.allclose(z[tis].double(), ref[tis], atol=1e-4)
    assert (z[~tis] == 0).all()


def test_pearson_loss_ignores_level_and_scale_of_hidden_pixels():
    torch.manual_seed(0)
    kw = dict(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8, input_norm=None)
    m = MaskedAutoencoder(recon_loss="pearson", **kw)
    mse = MaskedAutoencoder(recon_loss="mse", **kw)
    mask = np.ones((16, 16), bool)
    x = _batch([mask, mask], seed=6)
    tb = m.mask_tissue_patches(m.patchify(x)[1], 0.5, torch.Generator().manual_seed(0), (4, 4))
    target = x[:, 0]
    shifted = 3.0 * target + 2.0  # same pattern, other level and spread
    assert float(m.loss(x, shifted, tb)) < 1e-5
    assert float(mse.loss(x, shifted, tb)) > 1.0
    assert float(m.loss(x, -target, tb)) == pytest.approx(2.0, abs=1e-4)
    with pytest.raises(ValueError, match="recon_loss"):
        MaskedAutoencoder(recon_loss="l1", **kw)


def test_rank_input_gives_every_gene_the_same_values_in_another_arrangement():
    m = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
                          input_norm="rank", smooth_sigma=1.0)
    mask = np.zeros((12, 12), bool)
    mask[1:11, 2:12] = True
    x = _batch([mask, mask], seed=7)
    x[1, 0] = (x[1, 0] ** 8) * 50.0  # heavy-tailed, other level: only the ranks are kept
    z = m.normalize_input(x)
    tis = torch.from_numpy(mask)
    a, b = z[0, 0][tis].sort().values, z[1, 0][tis].sort().values
    assert torch.allclose(a, b, atol=1e-5)
    assert abs(float(a.mean())) < 1e-5 and float(a.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert (z[:, 0][:, ~tis] == 0).all()
    # ties share one value (their mean rank)
    x2 = x.clone()
    x2[0, 0] = torch.where(tis, torch.zeros_like(x2[0, 0]), x2[0, 0])
    x2[0, 0, 5, 5] = 1.0
    m0 = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
                           input_norm="rank", smooth_sigma=0.3)
    v = m0.normalize_input(x2)[0, 0][tis]
    assert len(torch.unique(v)) <= 2 + 8  # a point, its few smoothed neighbours, one tie value


def test_denoising_pass_reconstructs_the_image_from_its_count_view():
    from sigel.train.trainer import TrainConfig, training_views

    torch.manual_seed(0)
    m = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8)
    mask = np.ones((16, 16), bool)
    x = _batch([mask, mask], seed=8)
    view = _batch([mask, mask], seed=9)
    cfg = TrainConfig(denoise=True, mask_ratio=0.5)
    out, z, _ = training_views(m, x, cfg, torch.Generator().manual_seed(1), False, drawn=[view])
    ref = m(view, mask_ratio=0.5, generator=torch.Generator().manual_seed(1), target=x)
    assert torch.allclose(out["loss"], ref["loss"]) and torch.allclose(z, ref["z"])
    plain = m(view, mask_ratio=0.5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(out["loss"], plain["loss"])  # the target is x, not the view
    # noise2noise: the first half of the split is the input, the second the target
    half = _batch([mask, mask], seed=10)
    out, z, _ = training_views(m, x, TrainConfig(denoise="split", mask_ratio=0.5), torch.Generator().manual_seed(1),
                               False, drawn=[view, half])
    ref = m(view, mask_ratio=0.5, generator=torch.Generator().manual_seed(1), target=half)
    assert torch.allclose(out["loss"], ref["loss"]) and torch.allclose(z, ref["z"])


def test_embed_works_on_another_grid():
    torch.manual_seed(0)
    m = MaskedAutoencoder(patch_size=4, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8)
    for shape in [(16, 16), (20, 12), (10, 30)]:  # 10 x 30 is padded to 12 x 32 internally
        mask = np.ones(shape, bool)
        with torch.no_grad():
            z = m.embed(_batch([mask, mask]))
        assert z.shape == (2, 8) and torch.isfinite(z).all()


# --------------------------------------------------------------- Module III
def test_select_confident_keeps_top_fraction_per_context():
    resp = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3],
                         [0.2, 0.8], [0.45, 0.55]], dtype=torch.float64)
    keep = select_confident(resp, 0.5)
    # context 0: genes 0, 2, 3, 1 by confidence -> keep 0 and 2; context 1: 4 then 5 -> keep 4
    assert keep.tolist() == [True, False, True, False, True, False]
    assert select_confident(resp, 1.0).all()
    assert select_confident(resp, 1e-6).sum() == 2  # at least one per context


def test_contrastive_terms_prefer_the_right_structure():
    center = torch.zeros(2)
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_good = torch.tensor([[2.0, 0.1], [0.1, 3.0]])
    labels = torch.tensor([0, 1])
    assert prototype_contrastive_loss(z_good, labels, protos, center, 0.2) < \
        prototype_contrastive_loss(z_good.flip(1), labels, protos, center, 0.2)

    class G:  # gene 0 <-> 1 and 2 <-> 3 are neighbours
        indices = torch.tensor([[1], [0], [3], [2]])
        weights = torch.ones(4, 1)

    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]), dim=1)
    idx = torch.tensor([0, 2])
    good = scaffold_contrastive_loss(torch.tensor([[1.0, 0.05], [0.05, 1.0]]), idx, G, bank, center, 0.2)
    bad = scaffold_contrastive_loss(torch.tensor([[0.05, 1.0], [1.0, 0.05]]), idx, G, bank, center, 0.2)
    assert good < bad


@pytest.mark.parametrize("opts", [{}, {"smooth": "gaussian", "sigma": 2.0, "n_components": 10}],
                         ids=["box", "pca"])
def test_scaffold_links_genes_of_the_same_family(opts):
    ad = sigel.datasets.synthetic_tissue(80, n_families=4, frac_pattern_free=0.0, shape=(20, 20), seed=1)
    im = sigel.GeneImages.from_anndata(ad)
    g = image_knn_graph(im, k=5, chunk_size=16, **opts)  # several chunks
    fam = ad.var["family"].astype(str).to_numpy()[im.gene_index(im.genes)]
    nb = g.indices.numpy()
    assert nb.shape == (im.n_genes, 5)
    assert not np.any(nb == np.arange(im.n_genes)[:, None])  # no self loops
    assert (fam[nb] == fam[:, None]).mean() > 0.9
    assert (g.weights >= 0).all()
    assert g.to_scipy().shape == (im.n_genes, im.n_genes)


@pytest.mark.parametrize("input_norm,opts", [
    ("gaussian", {"smooth": "gaussian", "sigma": 1.5}),
    ("standardize", {"smooth": "box", "smooth_radius": 0}),
])
def test_pca_scaffold_uses_the_encoders_input_filter(adata, input_norm, opts):
    # full images (rarefy=None): with depth-matched draws the graph is built from a draw, not from m.images_
    m = SIGEL(**FAST, scaffold_graph="pca", input_norm=input_norm, smooth_sigma=1.5, rarefy=None).fit(adata, **FIT)
    want = image_knn_graph(m.images_, k=10, n_components=50, **opts)
    assert torch.equal(m.graph_.indices, want.indices) and torch.equal(m.graph_.weights, want.weights)
    box = image_knn_graph(m.images_, k=10)
    assert not torch.equal(m.graph_.indices, box.indices)  # not the default graph under another name


def test_principal_scores_are_deterministic_unit_rows():
    from sigel.model.scaffold import principal_scores

    f = torch.nn.functional.normalize(torch.randn(40, 30, generator=torch.Generator().manual_seed(0)), dim=1)
    a, b = principal_scores(f, 5), principal_scores(f.clone(), 5)
    assert a.shape == (40, 5) and torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(40), atol=1e-5)
    assert principal_scores(f, None) is f and principal_scores(f, 30) is f  # nothing to drop
    with pytest.raises(ValueError, match="smooth"):
        image_knn_graph(sigel.GeneImages.from_anndata(sigel.datasets.synthetic_tissue(20, seed=0)), smooth="median")


def test_schedule_helpers():
    assert lr_at(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(100, 100, 10, 1.0, 0.0) == pytest.approx(0.0)
    b1 = gene_batches(10, 4, torch.Generator().manual_seed(0))
    b2 = gene_batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in b1] == [4, 4, 2]
    assert all(torch.equal(a, b) for a, b in zip(b1, b2))
    assert sorted(torch.cat(b1).tolist()) == list(range(10))


# ------------------------------------------------------------------- facade
def test_fit_outputs(model, adata):
    G = model.images_.n_genes
    emb, mem, ctx = model.embeddings_, model.memberships_, model.contexts_
    assert model.is_trained
    assert emb.shape == (G, 8) and list(emb.columns) == [f"dim_{i}" for i in range(8)]
    assert emb.index.equals(model.images_.genes) and set(emb.index) <= set(adata.var_names)
    assert np.isfinite(emb.to_numpy()).all()
    assert mem.shape == (G, 3) and list(mem.columns) == ["context_0", "context_1", "context_2"]
    np.testing.assert_allclose(mem.sum(1).to_numpy(), 1.0, atol=1e-6)
    assert mem.index.equals(emb.index) and ctx.index.equals(emb.index)
    assert list(ctx.columns) == ["context", "confidence"]
    assert ctx["context"].dtype == np.int64
    np.testing.assert_allclose(ctx["confidence"].to_numpy(), mem.max(1).to_numpy())
    assert len(model.history_) == model.epochs_run_ <= 4
    assert {"epoch", "loss", "recon", "seconds"} <= set(model.history_.columns)
    assert model.stop_reason_ in ("converged", "max_epochs")
    assert model.mixture_.mu.shape == (3, 8)
    # no collapse: several contexts used, embeddings spread
    assert ctx["context"].nunique() > 1
    assert emb.to_numpy().std(0).mean() > 1e-4
    r = repr(model)
    assert "8 dims" in r and "K=3" in r and "epochs" in r
    assert json.dumps(model.init_params_)  # JSON-serialisable


def test_default_n_contexts():
    from sigel._model import default_n_contexts

    assert default_n_contexts(10) == 2
    assert default_n_contexts(300) == 10
    assert default_n_contexts(100000) == 50
    assert default_n_contexts(2) == 1


def test_fit_does_not_modify_adata():
    ad = sigel.datasets.synthetic_tissue(40, n_families=2, shape=(12, 12), seed=2)
    before = ad.copy()
    SIGEL(**{**FAST, "epochs": 2, "pretrain_epochs": 1, "n_contexts": 2}).fit(ad, **FIT)
    assert (ad.X != before.X).nnz == 0
    assert ad.obs.equals(before.obs) and ad.var.equals(before.var)
    assert set(ad.uns) == set(before.uns) and set(ad.obsm) == set(before.obsm) and set(ad.varm) == set(before.varm)
    assert set(ad.layers) == set(before.layers)


def test_same_seed_gives_identical_embeddings(adata):
    kw = {**FAST, "epochs": 3}
    a = SIGEL(**kw).fit(adata, **FIT)
    b = SIGEL(**kw).fit(adata, **FIT)
    assert np.array_equal(a.embeddings_.to_numpy(), b.embeddings_.to_numpy())
    assert np.array_equal(a.memberships_.to_numpy(), b.memberships_.to_numpy())
    c = SIGEL(**kw).fit(adata, **{**FIT, "seed": 1})
    assert not np.array_equal(a.embeddings_.to_numpy(), c.embeddings_.to_numpy())


def test_transform_new_sample_on_another_grid(model, adata):
    # same genes, a differently placed section on a hexagonal (Visium) lattice
    other = sigel.datasets.synthetic_tissue(60, n_families=3, shape=(14, 18), geometry="visium", seed=0,
                                            sample_seed=5)
    emb = model.transform(other)
    assert list(emb.columns) == list(model.embeddings_.columns)
    assert set(emb.index) <= set(other.var_names)
    assert len(emb.index.intersection(model.embeddings_.index)) >= 0.9 * len(model.embeddings_)
    assert np.isfinite(emb.to_numpy()).all()
    # the training data through transform reproduces embeddings_
    again = model.transform(adata)
    np.testing.assert_allclose(again.loc[model.embeddings_.index].to_numpy(), model.embeddings_.to_numpy(),
                               atol=1e-5)
    mem = model.predict_memberships(emb)
    assert mem.shape == (len(emb), 3) and mem.index.equals(emb.index)
    np.testing.assert_allclose(mem.sum(1).to_numpy(), 1.0, atol=1e-6)
    # a gene subset, and prebuilt images
    sub = model.transform(adata, genes=list(adata.var_names[:5]))
    assert len(sub) <= 5
    z = model.embed_images(model.images_.subset(model.images_.genes[:7]))
    assert z.shape == (7, 8) and z.dtype == np.float32


def test_save_load_roundtrip(model, adata, tmp_path):
    path = model.save(tmp_path / "m")
    assert (path / "config.json").exists() and (path / "weights.safetensors").exists()
    assert not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))
    with pytest.raises(SigelInputError, match="already exists"):
        model.save(path)
    model.save(path, overwrite=True)
    loaded = SIGEL.load(path)
    assert loaded.is_trained and loaded.images_ is None
    assert loaded.init_params_ == model.init_params_
    pd.testing.assert_frame_equal(loaded.embeddings_, model.embeddings_)
    pd.testing.assert_frame_equal(loaded.memberships_, model.memberships_)
    pd.testing.assert_frame_equal(loaded.contexts_, model.contexts_)
    assert len(loaded.history_) == len(model.history_)
    assert np.array_equal(loaded.transform(adata).to_numpy(), model.transform(adata).to_numpy())
    assert repr(loaded) == repr(model)


def test_load_gives_clear_errors(model, tmp_path):
    with pytest.raises(SigelInputError, match="does not exist"):
        SIGEL.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SigelInputError, match="config.json"):
        SIGEL.load(tmp_path / "empty")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(SigelInputError, match="corrupt"):
        SIGEL.load(bad)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "scvi"}))
    with pytest.raises(SigelInputError, match="not a saved SIGEL model"):
        SIGEL.load(foreign)
    good = model.save(tmp_path / "good")
    (good / "weights.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(SigelInputError, match="corrupt"):
        SIGEL.load(good)
    (good / "weights.safetensors").unlink()
    with pytest.raises(SigelInputError, match="weights"):
        SIGEL.load(good)
    with pytest.raises(SigelInputError, match="not trained"):
        SIGEL().transform(None)


def test_write_to_anndata(model, adata):
    ad = adata.copy()
    out = model.write_to(ad)
    assert out is model
    D, K = 8, 3
    assert ad.varm["sigel"].shape == (ad.n_vars, D)
    assert ad.varm["sigel_contexts"].shape == (ad.n_vars, K)
    emb = pd.DataFrame(ad.varm["sigel"], index=ad.var_names)
    np.testing.assert_array_equal(emb.loc[model.embeddings_.index].to_numpy(), model.embeddings_.to_numpy())
    missing = ad.var_names.difference(model.embeddings_.index)
    assert np.isnan(emb.loc[missing].to_numpy()).all()
    assert ad.var["sigel_context"].dtype == "Int64"
    assert ad.var.loc[model.contexts_.index, "sigel_context"].tolist() == model.contexts_["context"].tolist()
    assert ad.var["sigel_confidence"].notna().sum() == len(model.embeddings_)
    u = ad.uns["sigel"]
    assert u["params"]["embed_dim"] == D and u["n_contexts"] == K
    assert len(u["history"]["epoch"]) == model.epochs_run_
    assert u["mixture"]["mu"].shape == (K, D)


def test_embed_helper_writes_and_returns_model():
    from sigel._model import embed

    ad = sigel.datasets.synthetic_tissue(30, n_families=2, shape=(12, 12), seed=3)
    m = embed(ad, **{**FAST, "epochs": 2, "pretrain_epochs": 1, "n_contexts": 2}, **FIT)
    assert isinstance(m, SIGEL) and "sigel" in ad.varm and "sigel_context" in ad.var


@pytest.mark.parametrize("ablation", [dict(refine=False), dict(scaffold=False), dict(mixture="gaussian")])
def test_ablations_run(adata, ablation):
    m = SIGEL(**{**FAST, "epochs": 3, **ablation}).fit(adata, **FIT)
    assert m.is_trained and np.isfinite(m.embeddings_.to_numpy()).all()
    np.testing.assert_allclose(m.memberships_.sum(1).to_numpy(), 1.0, atol=1e-6)
    if ablation.get("refine") is False:
        assert (m.history_["phase"] == "pretrain").all()


def test_nonfinite_loss_raises_naming_the_term(adata, monkeypatch):
    def nan_loss(self, x, pred, tb, reduction="mean"):
        return (pred * float("nan")).mean()

    monkeypatch.setattr(MaskedAutoencoder, "loss", nan_loss)
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1: term 'recon'"):
        SIGEL(**FAST).fit(adata, **FIT)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(SigelInputError, match="mixture"):
        SIGEL(mixture="dirichlet")
    with pytest.raises(SigelInputError, match="patch_size"):
        SIGEL(patch_size=6)
    with pytest.raises(SigelInputError, match="width"):
        SIGEL(width=30, n_heads=4)
    for bad in (-0.1, 1.0):
        with pytest.raises(SigelInputError, match="ema_decay"):
            SIGEL(ema_decay=bad)
    with pytest.raises(TypeError):
        SIGEL(32)  # keyword-only
    with pytest.raises(SigelInputError, match="n_contexts"):
        SIGEL(n_contexts=500).fit(sigel.datasets.synthetic_tissue(30, shape=(10, 10)), **FIT)


def test_weight_average_is_a_running_mean_then_an_exponential_one():
    from sigel.train.trainer import WeightAverage

    live = torch.nn.Linear(1, 1, bias=False)
    avg = WeightAverage(live, decay=0.75)  # plain mean over the first 1 / (1 - 0.75) = 4 steps
    seen, expect = [], None
    for step, w in enumerate([4.0, 2.0, 6.0, 0.0, 8.0, 8.0]):
        with torch.no_grad():
            live.weight.fill_(w)
        avg.update(step)
        seen.append(w)
        expect = float(np.mean(seen)) if step < 4 else 0.75 * expect + 0.25 * w
        assert float(avg.module.weight) == pytest.approx(expect)
    assert not avg.module.weight.requires_grad and float(live.weight.detach()) == 8.0
    avg.copy_to(live)
    assert float(live.weight.detach()) == pytest.approx(expect)


def test_the_weight_average_is_the_model_returned(adata, monkeypatch):
    """With ema_decay the averaged encoder is what fit returns and saves; its
    vectors are the fit's vectors, and it differs from the live weights."""
    from sigel.train import trainer as T

    live = {}
    orig = T.WeightAverage.copy_to

    def spy(self, model):
        live.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        orig(self, model)

    monkeypatch.setattr(T.WeightAverage, "copy_to", spy)
    m = SIGEL(**{**FAST, "ema_decay": 0.9}).fit(adata, **FIT)
    monkeypatch.undo()
    assert live, "the weight average was not written into the model"
    sd = m.module_.state_dict()
    assert any(not torch.equal(sd[k], live[k]) for k in live)
    np.testing.assert_allclose(m.transform(adata).to_numpy(), m.embeddings_.to_numpy(), atol=1e-4)
    off = SIGEL(**{**FAST, "ema_decay": 0.0}).fit(adata, **FIT)
    assert not np.allclose(off.embeddings_.to_numpy(), m.embeddings_.to_numpy())

