"""The SIGEL model layer: masked autoencoder (Module I), Student-t mixture
(Module II), self-paced pseudo-contrastive refinement (Module III) and the
image similarity scaffold."""
from .mae import MaskedAutoencoder, sincos_pos_embed_2d
from .mixture import MixtureParams, StudentTMixture
from .refine import (
    RefineState,
    label_change,
    mixture_nll_loss,
    prototype_contrastive_loss,
    refinement_losses,
    scaffold_contrastive_loss,
    select_confident,
)
from .scaffold import GeneGraph, image_knn_graph, smoothed_image_features

__all__ = [
    "MaskedAutoencoder",
    "sincos_pos_embed_2d",
    "MixtureParams",
    "StudentTMixture",
    "RefineState",
    "label_change",
    "mixture_nll_loss",
    "prototype_contrastive_loss",
    "refinement_losses",
    "scaffold_contrastive_loss",
    "select_confident",
    "GeneGraph",
    "image_knn_graph",
    "smoothed_image_features",
]
