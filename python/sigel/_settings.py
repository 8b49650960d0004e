"""Package-wide settings: verbosity, progress bars, default seed and threads."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def seeded(seed: int | None, device=None):
    """Seed Python, numpy and torch for the block, then put every global generator back.

    Code inside draws from the global generators as if they had been seeded
    with ``seed`` (so results are repeatable), but the caller's ``random``,
    ``numpy.random`` and torch (CPU and, when ``device`` is CUDA, that GPU's)
    states are restored on exit: a fit has no side effect on them. Yields the
    seed used.
    """
    import torch

    seed = settings.seed if seed is None else int(seed)
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = []
    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        d = torch.device(device)
        devices = [d.index if d.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=devices):
            random.seed(seed)
            np.random.seed(seed % (2**32))
            torch.manual_seed(seed)
            yield seed
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def set_threads(n_threads: int | None) -> None:
    """Set torch's intra-op thread count (``None`` leaves torch's default)."""
    if n_threads is None:
        return
    import torch

    from ._validate import SigelInputError, as_int

    n = as_int("n_threads", n_threads)
    if n < 1:
        raise SigelInputError(f"`n_threads` must be >= 1; got {n_threads!r}")
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
    from ._validate import SigelInputError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SigelInputError(f"`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SigelInputError(f"device={device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SigelInputError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) available")
    return dev
