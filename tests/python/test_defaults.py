"""The model's defaults live in one table (sigel._defaults.HYPER) and every layer reads it."""
import dataclasses
import inspect

import pytest

import sigel
from sigel._defaults import HYPER
from sigel.model import refine
from sigel.train.trainer import TrainConfig


def _signature_defaults(f) -> dict:
    return {k: v.default for k, v in inspect.signature(f).parameters.items()
            if v.default is not inspect.Parameter.empty}


def test_sigel_constructor_defaults_are_the_table():
    assert _signature_defaults(sigel.SIGEL.__init__) == dict(HYPER)


def test_the_table_is_read_only():
    with pytest.raises(TypeError):
        HYPER["temperature"] = 0.5


def test_a_default_model_trains_with_a_bare_train_config():
    """SIGEL() passes every training setting through; a bare TrainConfig (with
    the resolved epochs) is the same configuration, so the two cannot drift."""
    model = sigel.SIGEL()
    cfg = model._train_config(3000)
    bare = TrainConfig(epochs=cfg.epochs, pretrain_epochs=cfg.pretrain_epochs)
    assert cfg == bare
    shared = {f.name for f in dataclasses.fields(TrainConfig)} & set(HYPER)
    assert {"temperature", "lr", "mask_ratio", "batch_size", "rarefy_draws"} <= shared
    for name in shared - {"epochs", "pretrain_epochs"}:
        assert getattr(bare, name) == HYPER[name], name


def test_refinement_losses_default_to_the_models_temperatures():
    fields = {f.name: f.default for f in dataclasses.fields(refine.RefineState)}
    assert fields["temperature"] == HYPER["temperature"]
    assert fields["view_temperature"] == HYPER["view_temperature"]
    for f in (refine.prototype_contrastive_loss, refine.scaffold_contrastive_loss):
        assert _signature_defaults(f)["temperature"] == HYPER["temperature"]
    assert _signature_defaults(refine.view_invariance_loss)["temperature"] == HYPER["view_temperature"]


def test_the_learning_rate_floor_follows_the_learning_rate():
    """min_lr is lr / 20 wherever lr is set (one rule, in TrainConfig), unless given."""
    assert TrainConfig(lr=1e-2).min_lr == pytest.approx(5e-4)
    assert TrainConfig(lr=1e-2, min_lr=1e-3).min_lr == 1e-3
    assert sigel.SIGEL(lr=4e-3)._train_config(3000).min_lr == pytest.approx(2e-4)
