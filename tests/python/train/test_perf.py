"""Speed paths must give the results of the plain ones; the thread policy and its overrides."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sigel
from sigel import _settings
from sigel._validate import SigelInputError
from sigel.data.images import _robust_scale, _sort_within_rows
from sigel.model.mae import MaskedAutoencoder
from sigel.train.inference import TokenLayout, patch_values, token_layout
from sigel.train.trainer import embed_all


# ------------------------------------------------------------------ fixtures
def _images(geometry="grid", n_genes=60, shape=(22, 26), seed=0, **kw):
    a = sigel.datasets.synthetic_tissue(n_genes, shape=shape, geometry=geometry, seed=seed)
    return sigel.GeneImages.from_anndata(a, **kw)


def _trained_like(patch, input_norm="standardize", seed=0, patch_stem=False):
    torch.manual_seed(seed)
    m = MaskedAutoencoder(patch_size=patch, width=16, depth=2, n_heads=2, embed_dim=8, decoder_width=8,
                          input_norm=input_norm, patch_stem=patch_stem)
    with torch.no_grad():  # move away from the initialisation (zeros in biases, pool queries ...)
        for q in m.parameters():
            q.add_(0.1 * torch.randn_like(q))
    return m.eval()


def _plain_embed(model, images, rows, batch=17):
    with torch.inference_mode():
        return torch.cat([model.embed(images.to_tensor(rows[s:s + batch])) for s in range(0, len(rows), batch)])


# ------------------------------------------------- embedding from sparse rows
@pytest.mark.parametrize("input_norm", ["gaussian", "standardize", "smooth", None])
@pytest.mark.parametrize("patch", [2, 4])
@pytest.mark.parametrize("patch_stem", [False, True])
def test_sparse_token_embedding_equals_dense_embed(input_norm, patch, patch_stem):
    images = _images()
    model = _trained_like(patch, input_norm, patch_stem=patch_stem)
    assert token_layout(model, images) is not None
    rows = np.arange(images.n_genes)
    ref = _plain_embed(model, images, rows)
    for bs in (1, 7, 64):
        got = embed_all(model, images, batch_size=bs)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=2e-5, rtol=1e-5), (got - ref).abs().max()
    # non-contiguous rows, in any order
    sub = np.array([5, 3, 40, 41, 0, 59])
    got = embed_all(model, images, batch_size=4, rows=sub)
    assert torch.allclose(got, ref[sub], atol=2e-5, rtol=1e-5)


def test_sparse_token_embedding_free_geometry_and_shared_pixels():
    # 'free' geometry: several cells per pixel, an image side that is not a multiple of the patch
    # (edge patches padded with pixels outside the tissue)
    images = _images("free", n_genes=40, shape=(30, 30), resolution=37)
    model = _trained_like(4)
    assert token_layout(model, images) is not None
    for stem in (False, True):  # with and without the two-layer patch embedding
        gauss = _trained_like(4, "gaussian", patch_stem=stem)
        ref_g = _plain_embed(gauss, images, np.arange(images.n_genes))
        got_g = embed_all(gauss, images, batch_size=16)
        assert torch.allclose(got_g, ref_g, atol=2e-5, rtol=1e-5), (got_g - ref_g).abs().max()
    rows = np.arange(images.n_genes)
    ref = _plain_embed(model, images, rows)
    got = embed_all(model, images, batch_size=16)
    assert torch.allclose(got, ref, atol=2e-5, rtol=1e-5), (got - ref).abs().max()


def test_patch_values_match_standardised_dense_patches():
    images = _images(n_genes=12)
    model = _trained_like(4)
    layout = TokenLayout(images.mask, 4)
    idx = np.arange(12)
    x = model.pad(model.normalize_input(images.to_tensor(idx)))  # (B, 2, H', W')
    B, _, Hp, Wp = x.shape
    p = 4
    patches = x[:, 0].reshape(B, Hp // p, p, Wp // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)
    want = patches[:, torch.as_tensor(layout.token_ids)]
    got = torch.from_numpy(patch_values(images, idx, layout, standardize=True))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)


def test_models_outside_the_sparse_route_use_the_plain_one():
    images = _images(n_genes=10)
    ranked = _trained_like(4, "rank")
    assert token_layout(ranked, images) is None
    ref = _plain_embed(ranked, images, np.arange(10))
    assert torch.allclose(embed_all(ranked, images, batch_size=3), ref, atol=1e-6)


def test_transform_of_the_training_data_matches_the_fit():
    adata = sigel.datasets.synthetic_tissue(80, shape=(20, 20), seed=3)
    m = sigel.SIGEL(epochs=2, pretrain_epochs=1, n_contexts=3, width=16, depth=1, decoder_width=8, rarefy=None).fit(
        adata, seed=0, progress=False, n_threads=1)
    again = m.transform(adata)
    imgs = m.images_
    ref = _plain_embed(m.module_, imgs, np.arange(imgs.n_genes)).numpy()
    assert list(again.index) == list(imgs.genes)
    np.testing.assert_allclose(again.to_numpy(), ref, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------ image building
def test_sort_within_rows_equals_lexsort():
    rng = np.random.default_rng(0)
    row_of = np.sort(rng.integers(0, 50, size=4000))
    data = rng.gamma(0.5, 2.0, size=4000).astype(np.float32)
    data[::7] = data[1::7][: len(data[::7])]  # ties
    want = data[np.lexsort((data, row_of))]
    np.testing.assert_array_equal(_sort_within_rows(data, row_of), want)
    neg = data.copy()
    neg[3] = -1.5  # negative values take the general route
    np.testing.assert_array_equal(_sort_within_rows(neg, row_of), neg[np.lexsort((neg, row_of))])


def test_robust_scale_uses_the_in_tissue_quantile():
    rng = np.random.default_rng(1)
    n_tissue = 50
    dense = np.zeros((6, 64), dtype=np.float32)
    for g in range(6):
        k = [0, 1, 3, 10, 30, 50][g]
        dense[g, rng.choice(n_tissue, size=k, replace=False)] = rng.gamma(1.0, 2.0, size=k)
    out = _robust_scale(sp.csr_matrix(dense), n_tissue, 0.9).toarray()
    for g in range(6):
        vals = np.sort(dense[g, :n_tissue])
        q = vals[int(np.ceil(0.9 * (n_tissue - 1)))]
        scale = q if q > 0 else (vals.max() if vals.max() > 0 else 1.0)
        np.testing.assert_allclose(out[g], np.minimum(dense[g] / scale, 1.0), rtol=1e-6)


# -------------------------------------------------------------- thread policy
@pytest.fixture
def clean_threads(monkeypatch):
    monkeypatch.delenv("SIGEL_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    old = sigel.settings.n_threads
    before = torch.get_num_threads()
    yield monkeypatch
    sigel.settings.n_threads = old
    torch.set_num_threads(before)


def test_thread_overrides_in_order(clean_threads):
    mp = clean_threads
    mp.setattr(_settings, "default_threads", lambda: 1)
    assert _settings.resolve_threads() == (1, "auto")
    mp.setenv("OMP_NUM_THREADS", "3")
    assert _settings.resolve_threads() == (3, "OMP_NUM_THREADS")
    mp.setenv("SIGEL_NUM_THREADS", "2")
    assert _settings.resolve_threads() == (2, "SIGEL_NUM_THREADS")
    sigel.settings.n_threads = 5
    assert _settings.resolve_threads() == (5, "settings")
    assert _settings.resolve_threads(4) == (4, "argument")
    sigel.settings.n_threads = None
    assert _settings.resolve_threads() == (2, "SIGEL_NUM_THREADS")


def test_bad_thread_values_raise_naming_them(clean_threads):
    mp = clean_threads
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(SigelInputError, match="settings.n_threads"):
            sigel.settings.n_threads = bad
    with pytest.raises(SigelInputError, match="n_threads"):
        _settings.resolve_threads(0)
    mp.setenv("SIGEL_NUM_THREADS", "many")
    with pytest.raises(SigelInputError, match="SIGEL_NUM_THREADS"):
        _settings.resolve_threads()


def test_default_threads_leave_busy_cpus_alone(clean_threads):
    mp = clean_threads
    mp.setattr(_settings, "usable_cpus", lambda: 4)
    mp.setattr(_settings.os, "cpu_count", lambda: 4)
    for others, want in ((0, 4), (1, 3), (2, 2), (3, 1), (9, 1)):
        mp.setattr(_settings, "_runnable_others", lambda others=others: float(others))
        assert _settings.default_threads() == want
    # a process allowed 2 of 8 CPUs counts a share of the others
    mp.setattr(_settings, "usable_cpus", lambda: 2)
    mp.setattr(_settings.os, "cpu_count", lambda: 8)
    mp.setattr(_settings, "_runnable_others", lambda: 4.0)
    assert _settings.default_threads() == 1
    mp.setattr(_settings, "_runnable_others", lambda: 1.0)
    assert _settings.default_threads() == 2
    mp.setattr(_settings, "_runnable_others", lambda: None)  # no /proc/loadavg
    assert _settings.default_threads() == 2


def test_usable_cpus_respects_affinity_and_real_default():
    n = _settings.usable_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    assert 1 <= _settings.default_threads() <= n


def test_cgroup_quota_v1_and_v2(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert _settings.cgroup_cpu_quota(str(v2)) == pytest.approx(1.5)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert _settings.cgroup_cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert _settings.cgroup_cpu_quota(str(tmp_path / "v1")) == pytest.approx(3.0)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert _settings.cgroup_cpu_quota(str(tmp_path / "v1")) is None
    assert _settings.cgroup_cpu_quota(str(tmp_path / "nothing")) is None


def test_thread_scope_sets_and_restores(clean_threads):
    torch.set_num_threads(1)
    with _settings.thread_scope(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    sigel.settings.n_threads = 2
    with _settings.thread_scope():
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_fit_and_transform_use_the_setting_and_restore(clean_threads):
    adata = sigel.datasets.synthetic_tissue(40, shape=(14, 14), seed=4)
    seen = []
    torch.set_num_threads(1)
    sigel.settings.n_threads = 2
    m = sigel.SIGEL(epochs=1, pretrain_epochs=1, n_contexts=2, width=8, depth=1, n_heads=2, decoder_width=8,
                    rarefy=None)  # one embedding pass (depth-matched draws make one per draw)
    m._callback = lambda *a, **k: seen.append(torch.get_num_threads())
    m.fit(adata, seed=0, progress=False)
    assert seen and set(seen) == {2}
    assert torch.get_num_threads() == 1
    import sigel.train.trainer as tr

    orig = tr.embed_all
    inside = []

    def spy(*a, **k):
        inside.append(torch.get_num_threads())
        return orig(*a, **k)

    clean_threads.setattr(tr, "embed_all", spy)
    m.transform(adata)
    assert inside == [2] and torch.get_num_threads() == 1


@pytest.mark.parametrize("var, default, given", [("OMP_WAIT_POLICY", "PASSIVE", "ACTIVE"),
                                                  ("GOMP_SPINCOUNT", "10000", "5")])
def test_import_sets_openmp_waiting_unless_given(var, default, given):
    """Idle threads spin briefly (10,000 times), then sleep (a pure sleep made idle fits 2x slower);
    a value the user set wins."""
    code = f"import os, sigel, torch; print(os.environ.get({var!r}))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(sigel.__file__)), env.get("PYTHONPATH", "")])
    for value, want in ((None, default), (given, given)):
        if value is not None:
            env[var] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == want, out.stderr[-2000:]
