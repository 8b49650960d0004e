"""What every task needs from a fitted model: a check, its image options (from its recorded set-up), the grid test."""
from __future__ import annotations

import numpy as np

from .._validate import SigelInputError

__all__ = ["check_model", "model_image_options", "setup_options", "same_grid"]


def model_image_options(model, overrides: dict | None = None, adata=None) -> dict:
    """The options the model's images were built with (``overrides`` win), checked against ``adata`` when given.

    The training images' own settings when the model has them (the grid
    geometry as detected), else the model's recorded set-up (``setup_``).
    With ``adata``, the options are checked for it
    (`sigel.data.setup.checked_options`: a missing layer or coordinates
    raise, a missing library-size column falls back to the row sums).
    """
    from ..data import GeneImages
    from ..data.setup import checked_options

    if getattr(model, "images_", None) is not None:
        opts = GeneImages.image_options(model.images_.settings)
    else:
        opts = setup_options(model)
        if not opts:
            raise SigelInputError("the model carries no image options; fit it with `SIGEL.fit()` first")
    opts.update(overrides or {})
    return opts if adata is None else checked_options(adata, opts, overrides)


def setup_options(model, overrides: dict | None = None) -> dict:
    """The image options of the model's recorded set-up (``setup_``; empty without one), ``overrides`` winning."""
    setup = getattr(model, "setup_", None)
    opts = {} if setup is None else setup.options()
    opts.update(overrides or {})
    return opts


def check_model(model, what: str) -> None:
    """Raise a `SigelInputError` naming ``what`` when ``model`` is not trained."""
    if not getattr(model, "is_trained", False):
        raise SigelInputError(f"the SIGEL model is not trained; call `sigel.SIGEL(...).fit(adata)` before `{what}`")


def same_grid(a, b) -> None:
    """Raise when simulated images ``a`` are not on the grid of the real images ``b``."""
    if a.shape != b.shape or not np.array_equal(a.mask, b.mask):
        raise SigelInputError(
            f"simulated genes landed on a different grid ({a.shape}) than the real genes ({b.shape}); "
            "pass the AnnData the model was trained on"
        )
