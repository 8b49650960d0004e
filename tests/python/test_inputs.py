"""Bad input, reuse and side effects: every entry point refuses clearly and leaves the caller's data alone.

A parametrised matrix of broken AnnData objects (NaN/inf, negative or
non-integer counts, duplicated genes, missing or NaN coordinates, one spot,
nothing left after filtering, empty libraries) is fed to ``fit``,
``GeneImages.from_anndata``, ``transform``, the ``tl`` functions that take an
AnnData and the ``sigel train`` command line. Each must raise a
``SigelInputError`` whose message names the problem (the CLI: exit 2 with
``sigel: error: ...``), and the caller's AnnData must be hash-identical
afterwards. Everything is tiny (30 genes, 10 x 10 spots, a 1-block network).
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import sigel
from sigel import SIGEL, GeneImages, SigelInputError

FAST = dict(epochs=2, pretrain_epochs=1, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
            batch_size=32, n_contexts=2)
FIT = dict(progress=False, n_threads=1, seed=0)


def tissue(seed=0, n_genes=30):
    return sigel.datasets.synthetic_tissue(n_genes, n_families=2, shape=(10, 10), seed=seed)


def adata_hash(ad) -> str:
    """Content hash of everything an AnnData holds (matrices, frames, mappings, names)."""
    h = hashlib.sha256()

    def arr(x):
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            for a in (x.indptr, x.indices, x.data):
                h.update(np.ascontiguousarray(a).tobytes())
            h.update(repr(x.shape).encode())
        elif isinstance(x, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(x, index=True).to_numpy().tobytes())
            h.update(repr(list(x.columns)).encode() + repr(list(x.dtypes)).encode())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                arr(x[k])
        else:
            a = np.asarray(x)
            h.update(repr((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())

    arr(ad.X)
    for name in ("obs", "var"):
        arr(getattr(ad, name))
    for name in ("layers", "obsm", "varm", "obsp", "varp"):
        arr(dict(getattr(ad, name).items()))
    arr(dict(ad.uns))
    h.update("\x00".join(ad.obs_names).encode() + b"|" + "\x00".join(ad.var_names).encode())
    return h.hexdigest()


# ------------------------------------------------------------ broken inputs
def _set_X(ad, fn):
    X = ad.X.toarray() if sp.issparse(ad.X) else np.asarray(ad.X)
    X = X.astype(np.float64)
    fn(X)
    ad.X = sp.csr_matrix(X)
    return ad


def _nan_X(ad):
    return _set_X(ad, lambda X: X.__setitem__((0, 0), np.nan))


def _inf_X(ad):
    return _set_X(ad, lambda X: X.__setitem__((1, 2), np.inf))


def _negative(ad):
    return _set_X(ad, lambda X: X.__setitem__((2, 1), -3.0))


def _lognorm(ad):
    import scanpy as sc

    sc.pp.normalize_total(ad)
    sc.pp.log1p(ad)
    return ad


def _dup_genes(ad):
    names = list(ad.var_names)
    names[1] = names[0]
    ad.var_names = names
    return ad


def _no_coords(ad):
    del ad.obsm["spatial"]
    ad.obs = ad.obs.drop(columns=["x", "y"])
    return ad


def _nan_coords(ad):
    for c in ("x", "y"):
        v = ad.obs[c].to_numpy(np.float64).copy()
        v[3] = np.nan
        ad.obs[c] = v
    S = np.asarray(ad.obsm["spatial"], dtype=np.float64).copy()
    S[3] = np.nan
    ad.obsm["spatial"] = S
    return ad


def _one_spot(ad):
    return ad[:1].copy()


def _nothing_left(ad):
    # every gene detected in a single spot: min_spots=3 removes them all
    X = np.zeros(ad.shape)
    X[np.arange(ad.n_vars) % ad.n_obs, np.arange(ad.n_vars)] = 5.0
    ad.X = sp.csr_matrix(X)
    return ad


def _all_zero(ad):
    ad.X = sp.csr_matrix(ad.shape, dtype=np.float32)
    return ad


def _object_X(ad):
    ad.X = np.asarray(ad.X.toarray()).astype(str).astype(object)
    return ad


CASES = {
    "nan_X": (_nan_X, r"NaN or infinite"),
    "inf_X": (_inf_X, r"NaN or infinite"),
    "negative_counts": (_negative, r"negative"),
    "log_normalised": (_lognorm, r"non-integer.*`layer=`.*counts=False"),
    "duplicated_genes": (_dup_genes, r"duplicated gene names"),
    "no_coordinates": (_no_coords, r"coordinates"),
    "nan_coordinates": (_nan_coords, r"NaN|finite"),
    "one_spot": (_one_spot, r"spot"),
    "no_genes_after_filtering": (_nothing_left, r"no genes left|none of the model's genes|"
                                                r"0 measured genes of the target match"),
    "zero_library_sizes": (_all_zero, r"library size"),
    "object_dtype": (_object_X, r"must hold numbers"),
}


@pytest.fixture(scope="module")
def model():
    return SIGEL(**FAST).fit(tissue(), **FIT)


def _entry_points(model):
    tl = sigel.tl
    return {
        "from_anndata": lambda ad: GeneImages.from_anndata(ad),
        "fit": lambda ad: SIGEL(**FAST).fit(ad, **FIT),
        "transform": lambda ad: model.transform(ad),
        "context_scores": lambda ad: tl.context_scores(model, ad),
        "context_maps": lambda ad: tl.context_maps(model, ad),
        "svg": lambda ad: tl.svg(model, ad, n_null=2, progress=False),
        "split_half_embeddings": lambda ad: tl.split_half_embeddings(model, ad),
        "pattern_search": lambda ad: tl.pattern_search(model, ad, ad.obs["u"].to_numpy(), n_draws=2),
        "prune_genes": lambda ad: tl.prune_genes(model, ad),
        "impute": lambda ad: tl.impute(model, ad, method="knn", progress=False),
        "morans_i": lambda ad: tl.morans_i(ad),
        "spatial_domains": lambda ad: tl.spatial_domains(ad, n_domains=2, n_pcs=5, max_epochs=5, res_max_run=2,
                                                         res_max_epochs=2, n_threads=1),
    }


ENTRY_POINTS = ["from_anndata", "fit", "transform", "context_scores", "context_maps", "svg", "split_half_embeddings",
                "pattern_search", "prune_genes", "impute"]
# their own validation is being reworked together with their memory use (sparse neighbour graphs)
TISSUE_ENTRY_POINTS = ["morans_i", "spatial_domains"]


# the same problems in other words (functions with validators of their own)
LOOSE = {"nan_X": r"NaN|finite", "inf_X": r"infinite|finite", "negative_counts": r"negative|>= 0",
         "log_normalised": r"non-integer|integer|counts", "zero_library_sizes": r"library size|zero counts",
         "object_dtype": r"numbers|numeric"}

# combinations with a documented correct result instead of an error: pattern search images only its
# pseudo-genes (from the tissue's coordinates and library sizes), so real genes may all be filtered out
CORRECT_RESULT = {("pattern_search", "no_genes_after_filtering")}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bad_input_is_refused_and_adata_unchanged(model, entry, case):
    make, pattern = CASES[case]
    ad = make(tissue())
    before = adata_hash(ad)
    if (entry, case) in CORRECT_RESULT:
        hits = _entry_points(model)[entry](ad)
        assert isinstance(hits, pd.DataFrame) and len(hits) == len(model.embeddings_)
        return
    with pytest.raises(SigelInputError, match=pattern):
        _entry_points(model)[entry](ad)
    assert adata_hash(ad) == before


# Moran's I and SpaGCN filter no genes: genes detected in one spot each are scored / clustered on as given
TISSUE_CORRECT_RESULT = {("morans_i", "no_genes_after_filtering"), ("spatial_domains", "no_genes_after_filtering")}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", TISSUE_ENTRY_POINTS)
def test_bad_input_is_refused_by_the_tissue_functions(model, entry, case):
    make, _ = CASES[case]
    pattern = LOOSE.get(case, CASES[case][1])
    ad = make(tissue())
    before = adata_hash(ad)
    if (entry, case) in TISSUE_CORRECT_RESULT:
        out = _entry_points(model)[entry](ad)
        if entry == "morans_i":  # every gene is non-constant: a finite statistic for each
            assert len(out) == ad.n_vars and np.isfinite(out["I"]).all()
        else:
            assert out.index.equals(ad.obs_names) and out["domain"].notna().all()
        return
    with pytest.raises(SigelInputError, match=pattern):
        _entry_points(model)[entry](ad)
    assert adata_hash(ad) == before


@pytest.mark.parametrize("case", [c for c in CASES if c != "object_dtype"])  # h5ad stores no object numbers
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    from sigel.cli import main

    make, pattern = CASES[case]
    src = tmp_path / "in.h5ad"
    make(tissue()).write_h5ad(src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    rc = main(["train", str(src), "--out", str(tmp_path / "out"), "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("sigel: error: ") and "Traceback" not in err
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------- counts checks
def test_counts_false_opts_out_and_layer_points_at_counts():
    ad = tissue()
    ad.layers["counts"] = ad.X.copy()
    _lognorm(ad)
    with pytest.raises(SigelInputError, match=r"layers: \['counts'\]"):
        GeneImages.from_anndata(ad)
    from_layer = GeneImages.from_anndata(ad, layer="counts")
    raw = GeneImages.from_anndata(tissue())
    assert (from_layer.values != raw.values).nnz == 0
    assert GeneImages.from_anndata(ad, counts=False).n_genes > 0
    # counts=False is remembered for transform
    m = SIGEL(**FAST).fit(ad, counts=False, **FIT)
    assert m.image_options_["counts"] is False
    assert np.isfinite(m.transform(ad).to_numpy()).all()


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.uint16, bool])
def test_small_and_bool_dtypes_are_read(dtype):
    ad = tissue()
    X = ad.X.toarray()
    ad.X = (X > 0) if dtype is bool else X.astype(dtype)
    before = adata_hash(ad)
    im = GeneImages.from_anndata(ad)
    ref = tissue()
    ref.X = sp.csr_matrix((X > 0).astype(np.float32)) if dtype is bool else ref.X
    assert (im.values != GeneImages.from_anndata(ref).values).nnz == 0
    assert adata_hash(ad) == before


def test_backed_anndata_is_read(tmp_path):
    import anndata

    ad = tissue()
    ad.write_h5ad(tmp_path / "a.h5ad")
    backed = anndata.read_h5ad(tmp_path / "a.h5ad", backed="r")
    im = GeneImages.from_anndata(backed)
    assert (im.values != GeneImages.from_anndata(ad).values).nnz == 0


def test_zero_or_negative_library_sizes_are_refused(caplog):
    ad = tissue()
    ad.obs["lib"] = np.asarray(ad.X.sum(1)).ravel()
    ad.obs.loc[ad.obs_names[4], "lib"] = -1.0
    with pytest.raises(SigelInputError, match=r"library_size_key.*'lib'.*>= 0; 1 of"):
        GeneImages.from_anndata(ad, library_size_key="lib")
    ad.obs["lib"] = 0.0
    with pytest.raises(SigelInputError, match=r"library size of 0 in library_size_key: adata.obs\['lib'\]"):
        GeneImages.from_anndata(ad, library_size_key="lib")
    # a few empty spots are allowed (they read 0) and reported at info level
    ad.obs["lib"] = np.asarray(ad.X.sum(1)).ravel()
    ad.obs.loc[ad.obs_names[:3], "lib"] = 0.0
    import logging

    sigel_logger = logging.getLogger("sigel")
    sigel_logger.addHandler(caplog.handler)
    old = sigel.settings.verbosity
    sigel.settings.verbosity = 2
    try:
        im = GeneImages.from_anndata(ad, library_size_key="lib")
    finally:
        sigel.settings.verbosity = old
        sigel_logger.removeHandler(caplog.handler)
    assert "3 of 82 spots have a library size of 0" in caplog.text
    assert im.spot_values()[:, :3].nnz == 0


# --------------------------------------------------- reuse by content only
def test_context_scores_reuse_training_images_only_for_the_same_content(model):
    ad = tissue()
    ref = sigel.tl.context_scores(model, ad.copy())
    # an identical copy: the training images are reused, same scores
    pd.testing.assert_frame_equal(sigel.tl.context_scores(model, ad.copy()), ref)
    # same spot names, X replaced by NaN: refused (it used to reuse the training images)
    broken = _nan_X(ad.copy())
    with pytest.raises(SigelInputError, match="NaN"):
        sigel.tl.context_scores(model, broken)
    # a second section sharing every spot name and coordinate but with other counts: scored on its own data
    other = tissue(seed=0)
    other.X = tissue(seed=7).X[:, : other.n_vars]
    assert other.obs_names.equals(ad.obs_names)
    got = sigel.tl.context_scores(model, other.copy())
    assert not np.allclose(got.to_numpy(), ref.to_numpy())
    rebuilt = GeneImages.from_anndata(other, **{k: v for k, v in model.image_options_.items()})
    want = sigel.tl.context_scores(model, rebuilt)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy())
    # the fingerprint covers the coordinates too
    moved = ad.copy()
    moved.obsm["spatial"] = np.asarray(moved.obsm["spatial"]) + 1.0
    from sigel.data.images import content_hash

    assert content_hash(moved) != content_hash(ad) == model.images_.settings["content_hash"]


# ------------------------------------------------------ hyper-parameters
@pytest.mark.parametrize("kw,name", [
    (dict(epochs="ten"), "epochs"), (dict(n_contexts="3"), "n_contexts"), (dict(embed_dim=3.5), "embed_dim"),
    (dict(epochs=2.5), "epochs"), (dict(lr="0.1"), "lr"), (dict(mask_ratio=float("nan")), "mask_ratio"),
    (dict(batch_size=True), "batch_size"), (dict(mixture=3), "mixture"), (dict(width=None), "width"),
])
def test_hyperparameters_of_the_wrong_type_name_the_parameter(kw, name):
    with pytest.raises(SigelInputError, match=f"`{name}`"):
        SIGEL(**kw)


def test_integral_floats_are_accepted_as_integers():
    m = SIGEL(epochs=4.0, n_contexts=np.int64(3))
    assert m.init_params_["epochs"] == 4 and isinstance(m.init_params_["epochs"], int)
    assert isinstance(m.init_params_["n_contexts"], int)


@pytest.mark.parametrize("seed", [1.5, -1, 2**32, "1", True])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(SigelInputError, match="`seed`"):
        SIGEL(**FAST).fit(tissue(), **{**FIT, "seed": seed})


@pytest.mark.parametrize("kw,pattern", [(dict(n_threads=0), "n_threads"), (dict(n_threads=1.5), "n_threads"),
                                        (dict(device="gpu0"), "device")])
def test_bad_fit_options_are_refused(kw, pattern):
    with pytest.raises(SigelInputError, match=pattern):
        SIGEL(**FAST).fit(tissue(), **{**FIT, **kw})


def test_largest_seed_is_accepted_and_differs_from_zero():
    ad = tissue()
    a = SIGEL(**FAST).fit(ad, **{**FIT, "seed": 0})
    b = SIGEL(**FAST).fit(ad, **{**FIT, "seed": 2**32 - 1})
    assert not np.array_equal(a.embeddings_.to_numpy(), b.embeddings_.to_numpy())


def test_fit_leaves_the_global_generators_alone():
    ad = tissue()

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    expected = draw()
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    a = SIGEL(**FAST).fit(ad, **FIT)
    assert draw() == expected
    # and the fit itself does not depend on the global state
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    b = SIGEL(**FAST).fit(ad, **FIT)
    assert np.array_equal(a.embeddings_.to_numpy(), b.embeddings_.to_numpy())


# ------------------------------------------------------- save / load safety
def _rewrite(path, edit_config=None, edit_tensors=None):
    """Edit a saved model as a third party would, keeping its manifest consistent (to reach the checks)."""
    import json

    from safetensors.torch import load_file, save_file

    from sigel._model import _write_manifest

    if edit_config is not None:
        cfg = json.loads((path / "config.json").read_text())
        edit_config(cfg)
        (path / "config.json").write_text(json.dumps(cfg))
    if edit_tensors is not None:
        t = load_file(str(path / "weights.safetensors"))
        edit_tensors(t)
        save_file(t, str(path / "weights.safetensors"))
    _write_manifest(path, ["config.json", "weights.safetensors"])


def test_save_overwrite_removes_only_the_files_it_wrote(model, tmp_path):
    d = model.save(tmp_path / "m")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "sigel-manifest.json", "weights.safetensors"]
    (d / "notes.txt").write_text("mine")
    (d / "sub").mkdir()
    (d / "sub" / "config.json").write_text("{}")
    model.save(d, overwrite=True)
    assert (d / "notes.txt").read_text() == "mine" and (d / "sub" / "config.json").exists()
    pd.testing.assert_frame_equal(SIGEL.load(d).embeddings_, model.embeddings_)


@pytest.mark.parametrize("content", [{"config.json": '{"model_type": "scvi"}', "data.csv": "1,2"},
                                     {"results.tsv": "a\tb"}])
def test_save_refuses_foreign_directories_and_leaves_them_alone(model, tmp_path, content):
    d = tmp_path / "foreign"
    d.mkdir()
    for k, v in content.items():
        (d / k).write_text(v)
    with pytest.raises(SigelInputError, match="not a saved SIGEL model|already exists"):
        model.save(d)
    with pytest.raises(SigelInputError, match="refusing to overwrite"):
        model.save(d, overwrite=True)
    assert {p.name: p.read_text() for p in d.iterdir()} == content


def test_save_over_a_model_saved_without_manifest(model, tmp_path):
    import json

    d = model.save(tmp_path / "old")
    (d / "sigel-manifest.json").unlink()
    cfg = json.loads((d / "config.json").read_text())
    del cfg["manifest"]
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "keep.txt").write_text("x")
    assert SIGEL.load(d).is_trained  # older saves still load
    model.save(d, overwrite=True)
    assert (d / "keep.txt").exists() and (d / "sigel-manifest.json").exists()


def test_interrupted_save_is_refused_on_load(model, tmp_path, monkeypatch):
    import sigel._model as M

    d = model.save(tmp_path / "m")
    other = SIGEL(**{**FAST, "embed_dim": 4}).fit(tissue(), **FIT)

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        other.save(d, overwrite=True)
    monkeypatch.undo()
    with pytest.raises(SigelInputError, match="did not finish"):
        SIGEL.load(d)
    # a file changed after saving is noticed too
    d2 = model.save(tmp_path / "m2")
    (d2 / "config.json").write_text((d2 / "config.json").read_text().replace('"epochs_run"', '"epochs_run" '))
    with pytest.raises(SigelInputError, match="does not match sigel-manifest.json"):
        SIGEL.load(d2)


@pytest.mark.parametrize("edit,pattern", [
    (lambda c: c["resolved"].update(n_contexts=7), r"n_contexts=7 but the mixture has 2 components"),
    (lambda c: c["resolved"].update(patch_size="8"), r"resolved.patch_size must be a positive integer"),
    (lambda c: c["init_params"].update(epochs="ten"), r"invalid hyper-parameters.*`epochs`"),
    (lambda c: c["init_params"].update(embed_dim=3.5), r"invalid hyper-parameters.*`embed_dim`"),
    (lambda c: c["init_params"].update(scaffold_graph="knn"), r"invalid hyper-parameters.*`scaffold_graph`"),
    (lambda c: c.update(genes="ABC"), r"'genes' must be a list"),
    (lambda c: c.update(image_options=[1]), r"'image_options' must be an object"),
    (lambda c: c.update(epochs_run="3"), r"'epochs_run' must be a non-negative integer"),
])
def test_inconsistent_or_mistyped_config_is_refused(model, tmp_path, edit, pattern):
    d = model.save(tmp_path / "m")
    _rewrite(d, edit_config=edit)
    with pytest.raises(SigelInputError, match=pattern):
        SIGEL.load(d)


def test_model_saved_before_the_scaffold_graph_option_loads_with_the_box_graph(model, tmp_path):
    d = model.save(tmp_path / "m")
    _rewrite(d, edit_config=lambda c: c["init_params"].pop("scaffold_graph"))
    loaded = SIGEL.load(d)
    assert loaded.init_params_["scaffold_graph"] == "box"
    pd.testing.assert_frame_equal(loaded.embeddings_, model.embeddings_)


def test_model_saved_before_the_weight_average_loads_without_one(model, tmp_path):
    d = model.save(tmp_path / "m")
    _rewrite(d, edit_config=lambda c: c["init_params"].pop("ema_decay"))
    loaded = SIGEL.load(d)
    assert loaded.init_params_["ema_decay"] == 0.0
    pd.testing.assert_frame_equal(loaded.embeddings_, model.embeddings_)


def test_model_saved_before_the_patch_stem_option_loads_with_one_linear_patch_map(tmp_path):
    old = SIGEL(**{**FAST, "patch_stem": False}).fit(tissue(), **FIT)
    d = old.save(tmp_path / "m")
    _rewrite(d, edit_config=lambda c: c["init_params"].pop("patch_stem"))
    loaded = SIGEL.load(d)
    assert loaded.init_params_["patch_stem"] is False and loaded.module_.patch_mix is None
    pd.testing.assert_frame_equal(loaded.embeddings_, old.embeddings_)


def test_model_saved_without_its_head_count_loads_with_the_four_heads_of_the_earlier_default(tmp_path):
    old = SIGEL(**{**FAST, "n_heads": 4}).fit(tissue(), **FIT)
    d = old.save(tmp_path / "m")
    _rewrite(d, edit_config=lambda c: c["init_params"].pop("n_heads"))
    loaded = SIGEL.load(d)
    assert loaded.init_params_["n_heads"] == 4
    assert all(b.attn.n_heads == 4 for b in loaded.module_.blocks)
    # the encoder reads its weights as four heads: the same vectors as the fitted model's encoder
    ad = tissue()
    np.testing.assert_allclose(loaded.transform(ad).to_numpy(), old.transform(ad).to_numpy(), atol=1e-5)


def test_a_model_with_the_patch_stem_round_trips(tmp_path):
    m = SIGEL(**{**FAST, "patch_stem": True}).fit(tissue(), **FIT)
    assert m.module_.patch_mix is not None
    assert m.module_.patch_embed.out_channels == 2 * m.patch_size_ ** 2  # as many channels as a patch holds values
    loaded = SIGEL.load(m.save(tmp_path / "m"))
    assert loaded.init_params_["patch_stem"] is True
    pd.testing.assert_frame_equal(loaded.embeddings_, m.embeddings_)
    # the saved encoder gives back the fitted vectors (the sparse token route with the stem)
    ad = tissue()
    np.testing.assert_allclose(loaded.transform(ad).loc[m.embeddings_.index].to_numpy(),
                               m.embeddings_.to_numpy(), atol=1e-4)


@pytest.mark.parametrize("key", ["mae.patch_embed.weight", "mixture.mu", "results.embeddings"])
def test_nan_weights_are_refused(model, tmp_path, key):
    d = model.save(tmp_path / "m")

    def poison(t):
        k = key if key in t else next(k for k in t if k.startswith(key.split(".")[0] + ".") and t[k].ndim >= 1
                                       and t[k].is_floating_point())
        t[k] = t[k].clone()
        t[k].view(-1)[0] = float("nan")

    _rewrite(d, edit_tensors=poison)
    with pytest.raises(SigelInputError, match="NaN or infinite"):
        SIGEL.load(d)


# ------------------------------------------------------------ checkpoints
CKPT = dict(FAST, epochs=6, pretrain_epochs=2, batch_size=16, tol=0.0)  # runs every epoch: resuming is tested, not stopping


class _Killed(Exception):
    pass


def _fit_killed_after(ad, directory, kill_epoch, every, monkeypatch, params=CKPT):
    """Fit with checkpoints, interrupted right after 0-based epoch ``kill_epoch`` (as a kill would)."""
    import sigel.train.checkpoint as C

    orig = C.Checkpointer.epoch_end

    def epoch_end(self, trainer, epoch, *a, **k):
        orig(self, trainer, epoch, *a, **k)
        if epoch == kill_epoch:
            raise _Killed

    monkeypatch.setattr(C.Checkpointer, "epoch_end", epoch_end)
    with pytest.raises(_Killed):
        SIGEL(**params).fit(ad, checkpoint_dir=directory, checkpoint_every=every, **FIT)
    monkeypatch.undo()


@pytest.mark.parametrize("kill_epoch,every", [(4, 2), (1, 1)])
def test_resume_is_bitwise_identical_to_an_uninterrupted_fit(tmp_path, monkeypatch, kill_epoch, every):
    ad = tissue()
    ref = SIGEL(**CKPT).fit(ad, **FIT)
    d = tmp_path / "ckpt"
    # killed in refinement (after the checkpoint of epoch 4, epoch 5 is lost and redone) or in pre-training
    _fit_killed_after(ad, d, kill_epoch, every, monkeypatch)
    assert (d / "checkpoint.pt").exists()
    with pytest.raises(SigelInputError, match="already holds a checkpoint"):
        SIGEL(**CKPT).fit(ad, checkpoint_dir=d, **FIT)
    got = SIGEL(**CKPT).fit(ad, checkpoint_dir=d, checkpoint_every=every, resume=True, **FIT)
    assert np.array_equal(got.embeddings_.to_numpy(), ref.embeddings_.to_numpy())
    assert np.array_equal(got.memberships_.to_numpy(), ref.memberships_.to_numpy())
    cols = [c for c in ref.history_.columns if c != "seconds"]
    pd.testing.assert_frame_equal(got.history_[cols], ref.history_[cols], check_dtype=False)


def test_resume_with_depth_matched_draws_is_bitwise_identical(tmp_path, monkeypatch):
    # the rarefied draws' generator is part of the checkpoint: a resumed fit reads the same draws
    ad = tissue()
    params = dict(CKPT, rarefy="auto")
    ref = SIGEL(**params).fit(ad, **FIT)
    d = tmp_path / "ckpt"
    _fit_killed_after(ad, d, 3, 1, monkeypatch, params)
    got = SIGEL(**params).fit(ad, checkpoint_dir=d, resume=True, **FIT)
    assert np.array_equal(got.embeddings_.to_numpy(), ref.embeddings_.to_numpy())


def test_resume_refuses_a_checkpoint_of_other_data_or_seed(tmp_path, monkeypatch):
    ad = tissue()
    d = tmp_path / "ckpt"
    _fit_killed_after(ad, d, 2, 1, monkeypatch)
    with pytest.raises(SigelInputError, match="other data, options or seed"):
        SIGEL(**CKPT).fit(ad, checkpoint_dir=d, resume=True, **{**FIT, "seed": 1})
    with pytest.raises(SigelInputError, match="other data, options or seed"):
        SIGEL(**CKPT).fit(tissue(seed=4), checkpoint_dir=d, resume=True, **FIT)
    (d / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SigelInputError, match="unreadable"):
        SIGEL(**CKPT).fit(ad, checkpoint_dir=d, resume=True, **FIT)


# -------------------------------------------------------------------- CLI
def _cli(args, capsys):
    from sigel.cli import main

    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.err


def _tree(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


CLI_FAST = ["--epochs", "2", "--n-contexts", "2", "--quiet", "--threads", "1"]


@pytest.fixture()
def h5ad(tmp_path):
    src = tmp_path / "in.h5ad"
    tissue().write_h5ad(src)
    return src


@pytest.mark.parametrize("extra,pattern", [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--seed", str(2**32)], r"--seed must be in \[0, 2\*\*32\)"),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "--device"),
    (["--device", "tpu9"], "--device"),
    (["--library-size-key", "nope"], "--library-size-key 'nope'"),
    (["--layer", "counts"], "--layer 'counts'"),
    (["--spatial-key", "xy"], "--spatial-key 'xy'"),
    (["--epochs", "0"], "--epochs must be at least 1"),
])
def test_cli_bad_options_exit_2_without_traceback(tmp_path, capsys, h5ad, extra, pattern):
    rc, err = _cli(["train", h5ad, "--out", tmp_path / "out", *CLI_FAST, *extra], capsys)
    assert rc == 2 and err.startswith("sigel: error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert __import__("re").search(pattern, err)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_file_that_is_not_h5ad(tmp_path, capsys):
    bad = tmp_path / "x.h5ad"
    bad.write_text("gene,count\n")
    rc, err = _cli(["train", bad, "--out", tmp_path / "out", *CLI_FAST], capsys)
    assert rc == 2 and "as an .h5ad AnnData file" in err and "Traceback" not in err


def test_cli_out_is_checked_before_training_and_never_mixed(tmp_path, capsys, h5ad, monkeypatch):
    out = tmp_path / "out"
    # OUT a file; OUT a non-empty foreign folder: refused before any training
    calls = []
    monkeypatch.setattr(SIGEL, "fit", lambda *a, **k: calls.append(1))
    (tmp_path / "afile").write_text("x")
    rc, err = _cli(["train", h5ad, "--out", tmp_path / "afile", *CLI_FAST], capsys)
    assert rc == 2 and "not a directory" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "paper.tex").write_text("draft")
    rc, err = _cli(["train", h5ad, "--out", tmp_path / "mine", *CLI_FAST], capsys)
    assert rc == 2 and "not empty" in err
    rc, err = _cli(["train", h5ad, "--out", tmp_path / "mine", "--overwrite", *CLI_FAST], capsys)
    assert rc == 2 and "did not write" in err and (tmp_path / "mine" / "paper.tex").read_text() == "draft"
    assert calls == []
    monkeypatch.undo()

    # a first run, then a second one that is refused without --overwrite
    rc, _ = _cli(["train", h5ad, "--out", out, *CLI_FAST], capsys)
    assert rc == 0
    assert {"embeddings.tsv", "model", "report.html", "sigel-outputs.json"} <= {p.name for p in out.iterdir()}
    first = _tree(out)
    rc, err = _cli(["train", h5ad, "--out", out, *CLI_FAST, "--seed", "1"], capsys)
    assert rc == 2 and "--overwrite" in err and _tree(out) == first

    # killed while writing the second run's outputs: OUT still holds the complete first run
    import sigel.report as report

    def dies(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", dies)
    with pytest.raises(KeyboardInterrupt):
        _cli(["train", h5ad, "--out", out, "--overwrite", *CLI_FAST, "--seed", "1"], capsys)
    monkeypatch.undo()
    assert _tree(out) == first
    assert SIGEL.load(out / "model").is_trained
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []

    # --overwrite replaces it in one piece
    rc, _ = _cli(["train", h5ad, "--out", out, "--overwrite", *CLI_FAST, "--seed", "1"], capsys)
    assert rc == 0
    second = _tree(out)
    assert second.keys() == first.keys() and second["embeddings.tsv"] != first["embeddings.tsv"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_cli_spatial_key_and_no_counts(tmp_path, capsys):
    ad = tissue()
    ad.obsm["xy"] = ad.obsm.pop("spatial")
    ad.obs = ad.obs.drop(columns=["x", "y"])
    _lognorm(ad)
    src = tmp_path / "in.h5ad"
    ad.write_h5ad(src)
    rc, err = _cli(["train", src, "--out", tmp_path / "a", "--spatial-key", "xy", *CLI_FAST], capsys)
    assert rc == 2 and "counts=False" in err
    rc, err = _cli(["train", src, "--out", tmp_path / "a", "--spatial-key", "xy", "--no-counts", *CLI_FAST],
                   capsys)
    assert rc == 0, err
    m = SIGEL.load(tmp_path / "a" / "model")
    assert m.image_options_["spatial_key"] == "xy" and m.image_options_["counts"] is False


def test_cli_checkpoint_resume(tmp_path, capsys, h5ad, monkeypatch):
    import sigel.train.checkpoint as C

    args = ["train", h5ad, "--quiet", "--threads", "1", "--epochs", "4", "--n-contexts", "2"]
    rc, _ = _cli([*args, "--out", tmp_path / "ref"], capsys)
    assert rc == 0
    orig = C.Checkpointer.epoch_end

    def epoch_end(self, trainer, epoch, *a, **k):
        orig(self, trainer, epoch, *a, **k)
        if epoch == 1:
            raise _Killed

    monkeypatch.setattr(C.Checkpointer, "epoch_end", epoch_end)
    with pytest.raises(_Killed):
        _cli([*args, "--out", tmp_path / "out", "--checkpoint-every", "1"], capsys)
    monkeypatch.undo()
    assert (tmp_path / "out.checkpoint" / "checkpoint.pt").exists() and not (tmp_path / "out").exists()
    rc, err = _cli([*args, "--out", tmp_path / "out", "--checkpoint-every", "1"], capsys)
    assert rc == 2 and "--resume" in err
    rc, _ = _cli([*args, "--out", tmp_path / "out", "--checkpoint-every", "1", "--resume"], capsys)
    assert rc == 0
    assert (tmp_path / "out" / "embeddings.tsv").read_bytes() == (tmp_path / "ref" / "embeddings.tsv").read_bytes()
    assert not (tmp_path / "out.checkpoint").exists()


# --------------------------------------------------- SIGTERM with --nproc 2
def _procs_with(token: str) -> list:
    """PIDs of live processes whose command line contains ``token`` (Linux /proc)."""
    import os
    from pathlib import Path

    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if token in cmd and "zombie" not in state:
            out.append(int(d.name))
    return out


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_sigel_train_nproc_2_stops_torchrun_and_its_workers(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in.h5ad"
    tissue().write_h5ad(src)
    out = tmp_path / "out-sigterm"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(__import__("pathlib").Path(sigel.__file__).parents[1]))
    cmd = [sys.executable, "-m", "sigel.cli", "train", str(src), "--out", str(out), "--nproc", "2",
           "--epochs", "5000", "--n-contexts", "2", "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    token = str(out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(_procs_with(token)) < 4:  # us, torchrun, two workers
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        assert len(_procs_with(token)) >= 4, "torchrun and its workers did not start"
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        assert rc == 128 + signal.SIGTERM
        deadline = time.time() + 30
        while _procs_with(token) and time.time() < deadline:
            time.sleep(0.5)
        assert _procs_with(token) == []  # no launcher or worker left running
        time.sleep(1.0)
        assert not out.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _procs_with(token):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_while_writing_leaves_the_earlier_results(tmp_path, capsys, h5ad):
    """A real SIGKILL while the second run writes its outputs: OUT still holds the first run, complete."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "out"
    rc, _ = _cli(["train", h5ad, "--out", out, *CLI_FAST], capsys)
    assert rc == 0
    first = _tree(out)
    flag = tmp_path / "writing"
    script = (
        "import sys, time, sigel.report, sigel.cli\n"
        "def slow(model, path, **kw):\n"
        "    open(sys.argv[1], 'w').close()\n"
        "    time.sleep(120)\n"
        "sigel.report.write_report = slow\n"
        "sys.exit(sigel.cli.main(sys.argv[2:]))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(sigel.__file__).parents[1]))
    args = ["train", str(h5ad), "--out", str(out), "--overwrite", *CLI_FAST, "--seed", "1"]
    proc = subprocess.Popen([sys.executable, "-c", script, str(flag), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not flag.exists() and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert flag.exists()
        # the new tables and model are written by now, in the temporary folder
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
        assert len(tmp) == 1 and (tmp[0] / "embeddings.tsv").exists() and (tmp[0] / "model").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _tree(out) == first
    assert SIGEL.load(out / "model").is_trained


def test_cli_overwrite_accepts_earlier_outputs_without_marker_but_not_foreign_files(tmp_path, capsys, h5ad):
    import json

    out = tmp_path / "out"
    assert _cli(["train", h5ad, "--out", out, *CLI_FAST], capsys)[0] == 0
    # as written before markers and manifests existed
    (out / "sigel-outputs.json").unlink()
    (out / "model" / "sigel-manifest.json").unlink()
    cfg = json.loads((out / "model" / "config.json").read_text())
    del cfg["manifest"]
    (out / "model" / "config.json").write_text(json.dumps(cfg))
    (out / "model" / "mine.txt").write_text("keep")
    rc, err = _cli(["train", h5ad, "--out", out, "--overwrite", *CLI_FAST], capsys)
    assert rc == 2 and "model/mine.txt" in err and (out / "model" / "mine.txt").exists()
    (out / "model" / "mine.txt").unlink()
    assert _cli(["train", h5ad, "--out", out, "--overwrite", *CLI_FAST, "--seed", "2"], capsys)[0] == 0
    assert (out / "sigel-outputs.json").exists() and SIGEL.load(out / "model").is_trained
