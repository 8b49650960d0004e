"""Package-wide settings: verbosity, progress bars, default seed and threads."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time

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
    n_threads
        CPU threads for torch in ``fit``/``transform``/... when a call gets
        ``n_threads=None``. ``None`` (default): the environment variable
        ``SIGEL_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the automatic
        choice of :func:`default_threads` (the CPUs this process may use
        minus those other processes keep busy right now).
    """

    def __init__(self):
        self._verbosity = 1
        self._n_threads: int | None = None
        self.progress: bool | None = None
        self.seed: int = 0
        logger.setLevel(_LEVELS[1])

    @property
    def n_threads(self) -> int | None:
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value) -> None:
        if value is None:
            self._n_threads = None
            return
        self._n_threads = _check_threads(value, "settings.n_threads")

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


def _check_threads(value, what: str) -> int:
    from ._validate import SigelInputError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or float(value) != int(value) or int(value) < 1:
        raise SigelInputError(f"{what} must be a whole number >= 1 (or None); got {value!r}")
    return int(value)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota.

    The quota is read from ``/sys/fs/cgroup/cpu.max`` (cgroup v2) or
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1) and rounded up.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, int(np.ceil(quota - 1e-9))))
    return max(1, n)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup CPU quota (e.g. ``docker --cpus``), ``None`` when unlimited or unknown.

    Reads ``<root>/cpu.max`` (cgroup v2: ``"<quota> <period>"`` or ``"max ..."``),
    else ``<root>/cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (v1, quota -1 = none).
    """
    try:
        with open(os.path.join(root, "cpu.max")) as fh:
            q, period = fh.read().split()[:2]
        return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as fh:
            q = int(fh.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as fh:
            period = int(fh.read())
        return None if q <= 0 or period <= 0 else q / period
    except (OSError, ValueError):
        return None


def _runnable_others(samples: int = 3, gap: float = 0.003) -> float | None:
    """Threads of other processes running right now (``/proc/loadavg`` field 4, minus this one).

    The median of a few samples a few ms apart, so a short-lived process does not count.
    ``None`` where ``/proc/loadavg`` does not exist.
    """
    vals = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        vals.append(max(running - 1, 0))  # this thread is one of them
        if i + 1 < samples:
            time.sleep(gap)
    return float(np.median(vals))


def default_threads() -> int:
    """The automatic thread count: usable CPUs minus those busy with other work right now.

    ``usable_cpus()`` (affinity and cgroup quota), less the number of other
    runnable threads on the machine (``/proc/loadavg``; scaled to this
    process's share when it may use only some of the machine's CPUs), at
    least 1. Two fits started together on 2 cores therefore take 1 thread
    each instead of both asking for 2.
    """
    usable = usable_cpus()
    others = _runnable_others()
    if others is None or usable <= 1:
        return usable
    total = os.cpu_count() or usable
    busy = others * usable / max(total, usable)
    return int(max(1, min(usable, usable - int(np.floor(busy + 0.5)))))


def resolve_threads(n_threads: int | None = None) -> tuple[int, str]:
    """The thread count a call uses and where it came from.

    Order: the call's ``n_threads``, ``settings.n_threads``, the environment
    variables ``SIGEL_NUM_THREADS`` and ``OMP_NUM_THREADS``, then
    :func:`default_threads`.

    Returns
    -------
    tuple
        ``(n, source)`` with ``source`` one of ``'argument'``, ``'settings'``,
        ``'SIGEL_NUM_THREADS'``, ``'OMP_NUM_THREADS'``, ``'auto'``.
    """
    if n_threads is not None:
        return _check_threads(n_threads, "n_threads"), "argument"
    if settings.n_threads is not None:
        return int(settings.n_threads), "settings"
    for var in ("SIGEL_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(var, "").strip()
        if raw:
            try:
                return _check_threads(int(raw), var), var
            except ValueError:
                from ._validate import SigelInputError

                raise SigelInputError(f"environment variable {var} must be a whole number >= 1; got {raw!r}")
    return default_threads(), "auto"


def set_threads(n_threads: int | None) -> int:
    """Set torch's intra-op thread count by :func:`resolve_threads`; return it.

    ``None`` applies the default policy (``settings.n_threads``,
    ``SIGEL_NUM_THREADS``, ``OMP_NUM_THREADS``, else the automatic count).
    """
    import torch

    n, source = resolve_threads(n_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    logger.debug("torch threads: %d (%s)", n, source)
    return n


@contextlib.contextmanager
def thread_scope(n_threads: int | None = None):
    """Run a block with torch's thread count set by :func:`resolve_threads`, restored afterwards.

    Yields the thread count used.
    """
    import torch

    old = torch.get_num_threads()
    try:
        yield set_threads(n_threads)
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


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
