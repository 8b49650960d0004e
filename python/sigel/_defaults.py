"""The model's hyper-parameter defaults, in one table.

:class:`sigel.SIGEL` takes every default of its constructor from
:data:`HYPER`; the training loop's :class:`sigel.train.trainer.TrainConfig`,
the refinement's :class:`sigel.model.refine.RefineState` (and the
keyword defaults of its loss functions) and the encoder module
:class:`sigel.model.mae.MaskedAutoencoder` read the same entries, so a default
is changed here and nowhere else in Python. R's ``runSIGEL()`` repeats them
in its signature (R needs literal defaults for its help page); a test there
compares them with ``SIGEL``'s signature.

Saved models are unaffected by a change here: a model directory records
every constructor argument it was fitted with.
"""
from __future__ import annotations

from types import MappingProxyType

__all__ = ["HYPER"]

#: Constructor defaults of :class:`sigel.SIGEL`, by argument name (read-only).
#: ``None`` means "resolved from the data at fit time" (see the class docs).
HYPER = MappingProxyType({
    # Module I: the masked autoencoder and its input
    "n_contexts": None,
    "embed_dim": 32,
    "patch_size": None,
    "max_tokens": 128,
    "width": 32,
    "depth": 4,
    "n_heads": 1,
    "mlp_ratio": 2.0,
    "decoder_width": 32,
    "patch_stem": False,
    "mask_ratio": 0.75,
    "input_norm": "gaussian",
    "smooth_sigma": 2.0,
    "recon_loss": "mse",
    # optimisation
    "epochs": None,
    "pretrain_epochs": None,
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 2,
    "ema_decay": 0.998,
    # Module III: refinement and its fading scaffold
    "refine": True,
    "scaffold": True,
    "scaffold_k": 10,
    "scaffold_weight": 3.0,
    "scaffold_graph": "pca",
    # Module II: the mixture
    "mixture": "student_t",
    "dirichlet_alpha": 2.0,
    # Module III: loss weights, temperature, self-paced schedule
    "contrastive_weight": 1.0,
    "mixture_weight": 0.1,
    "temperature": 0.1,
    "select_start": 0.3,
    "select_end": 1.0,
    "em_iters": 5,
    "tol": 1e-3,
    # engineering
    "amp": False,
    "embed_batch_size": 256,
    # sampling-noise options (off by default) and depth-matched draws
    "invariance_weight": 0.0,
    "view_temperature": 0.1,
    "thin_min": 0.2,
    "spread_weight": 0.0,
    "denoise": False,
    "rarefy": "auto",
    "rarefy_draws": 4,
})
