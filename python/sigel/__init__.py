"""sigel: context-aware gene embeddings from spatial transcriptomics.

An implementation of SIGEL (Li et al., Genome Biology 26:287, 2025): gene
expression maps as images, a masked autoencoder with a convolutional decoder,
a Student's t mixture fitted by MAP-EM, and self-paced pseudo-contrastive
refinement; plus the analyses built on the gene vectors.
"""
from __future__ import annotations

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # idle OpenMP threads spin briefly, then sleep: beside another busy process, threads that
    # spin long wait on each other's spinning (read when torch loads). A pure sleep
    # (spin count 0) made an idle-machine fit 2x slower, so they spin 10,000 times first.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    _os.environ.setdefault("KMP_BLOCKTIME", "0")

from ._version import __version__

from . import datasets, pl, sim, tissue, tl
from ._model import SIGEL, embed
from ._settings import settings
from ._validate import SigelInputError
from .data import GeneImages

__all__ = ["GeneImages", "SIGEL", "SigelInputError", "datasets", "embed", "settings", "__version__"]


def _backend_info() -> dict:
    """Versions and device of this backend (used by R's ``sigelBackendInfo()``)."""
    import sys

    import numpy
    import torch

    from ._settings import resolve_device

    return {
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "sigel": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "numpy_major": int(numpy.__version__.split(".")[0]),
        "device": str(resolve_device("auto")),
        "cuda_available": bool(torch.cuda.is_available()),
        "threads": int(torch.get_num_threads()),
    }
