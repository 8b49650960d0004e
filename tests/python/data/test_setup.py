"""The recorded data set-up of a model (sigel.data.setup): saved with it, checked on new data by transform and tasks."""
import numpy as np
import pytest
import torch

import sigel
from sigel import SIGEL
from sigel._validate import SigelInputError
from sigel.data.setup import DataSetup


@pytest.fixture(scope="module")
def data():
    ad = sigel.datasets.synthetic_tissue(30, n_families=3, shape=(10, 10), seed=4)
    ad.layers["counts"] = ad.X.copy()
    ad.obs["umi"] = np.asarray(ad.X.sum(axis=1)).ravel() + 5.0
    return ad


@pytest.fixture(scope="module")
def model(data):
    torch.set_num_threads(1)
    return SIGEL(epochs=2, pretrain_epochs=1, width=16, depth=1, n_heads=2, decoder_width=16, embed_dim=8,
                 batch_size=32, n_contexts=3).fit(data, layer="counts", library_size_key="umi", seed=0,
                                                  progress=False, n_threads=1)


def test_setup_records_fields_options_and_content(model, data):
    s = model.setup_
    assert s.image_options["layer"] == "counts" and s.image_options["library_size_key"] == "umi"
    assert s.image_options["geometry"] == "auto" and s.n_spots == data.n_obs and s.n_genes_input == data.n_vars
    assert model.image_options_ == s.options() and model.image_options_ is not s.image_options
    assert s.same_content(data)
    changed = data.copy()
    changed.layers["counts"] = changed.layers["counts"].copy()
    changed.layers["counts"][0, 0] += 1
    assert not s.same_content(changed)


def test_setup_is_saved_and_loaded(model, data, tmp_path):
    model.save(tmp_path / "m")
    loaded = SIGEL.load(tmp_path / "m")
    assert loaded.setup_ == model.setup_
    np.testing.assert_allclose(loaded.transform(data).to_numpy(), model.transform(data).to_numpy(), atol=1e-5)
    # older model directories saved only the image options
    old = DataSetup.from_config({"image_options": model.setup_.image_options})
    assert old.options() == model.setup_.options() and old.content_hash is None and not old.same_content(data)


def test_transform_and_tasks_check_new_data_against_the_setup(model, data, caplog):
    no_layer = data.copy()
    del no_layer.layers["counts"]
    with pytest.raises(SigelInputError, match=r"layers\['counts'\]"):
        model.transform(no_layer)
    with pytest.raises(SigelInputError, match=r"layers\['counts'\]"):
        sigel.tl.svg(model, no_layer, n_null=3)
    no_lib = data.copy()
    del no_lib.obs["umi"]
    with caplog.at_level("WARNING", logger="sigel"):
        emb = model.transform(no_lib)
    assert "library_size_key 'umi' not in the new data" in caplog.text and len(emb) == len(model.embeddings_)
    no_xy = data.copy()
    del no_xy.obsm["spatial"]
    for c in ("x", "y", "array_row", "array_col"):
        if c in no_xy.obs:
            del no_xy.obs[c]
    with pytest.raises(SigelInputError, match="no spatial coordinates"):
        model.transform(no_xy)
