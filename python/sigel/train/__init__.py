"""Training loop for the SIGEL model (plain PyTorch)."""
from .trainer import (
    TrainConfig,
    Trainer,
    TrainResult,
    embed_all,
    fit_mixture,
    gene_batches,
    gradient_steps,
    lr_at,
    make_optimizer,
)

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "embed_all",
    "fit_mixture",
    "gene_batches",
    "gradient_steps",
    "lr_at",
    "make_optimizer",
]
