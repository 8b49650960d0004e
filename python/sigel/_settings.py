"""Package-wide settings: verbosity, progress bars, default seed and threads."""
from __future__ import annotations

import logging
import random
import sys

import numpy as np

logger = logging.getLogger("sigel")
if not logger.handlers:
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("sigel: %(message)s"))
    logger.addHandler(_h)
    logger.propagate = False

_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


class _Settings:
    """Global settings, the single place the backend reads them from.

    Attributes
    ----------
    verbosity
        0 = errors, 1 = warnings (default), 2 = info, 3 = debug.
    progress
        Show tqdm progress bars on long work (``None`` = only when stderr is a
        terminal or a notebook).
    seed
        Default seed used when a call gets ``seed=None``.
    """

    def __init__(self):
        self._verbosity = 1
        self.progress: bool | None = None
        self.seed: int = 0
        logger.setLevel(_LEVELS[1])

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        value = int(value)
        if value not in _LEVELS:
            raise ValueError(f"verbosity must be one of 0, 1, 2, 3; got {value}")
        self._verbosity = value
        logger.setLevel(_LEVELS[value])

    def show_progress(self, override: bool | None = None) -> bool:
        """Resolve whether to show a progress bar (per-call override first)."""
        if override is not None:
            return bool(override)
        if self.progress is not None:
            return bool(self.progress)
        return bool(getattr(sys.stderr, "isatty", lambda: False)())


settings = _Settings()


def seed_everything(seed: int | None) -> int:
    """Seed Python, numpy and torch (CPU and CUDA); return the seed used."""
    import torch

    seed = settings.seed if seed is None else int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed


def set_threads(n_threads: int | None) -> None:
    """Set torch's intra-op thread count (``None`` leaves torch's default)."""
    if n_threads is None:
        return
    import torch

    n = int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be >= 1; got {n_threads}")
    torch.set_num_threads(n)


def resolve_device(device: str | None = "auto"):
    """Map ``'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps'`` to a torch.device.

    ``'auto'`` picks CUDA when available, then Apple MPS, else CPU. Asking for
    CUDA on a machine without it raises a clear error.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev
