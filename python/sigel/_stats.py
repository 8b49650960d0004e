"""Small statistics shared by the tasks (one implementation each)."""
from __future__ import annotations

import numpy as np

__all__ = ["bh"]


def bh(p) -> np.ndarray:
    """Benjamini-Hochberg q-values; NaN p-values stay NaN and do not count as tests.

    Parameters
    ----------
    p
        Array-like of p-values.

    Returns
    -------
    numpy.ndarray
        q-values (float64, same shape as ``p``), capped at 1.

    Examples
    --------
    >>> from sigel._stats import bh
    >>> bh([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    pv = p[ok]
    n = pv.size
    if n == 0:
        return q
    order = np.argsort(pv)
    ranked = pv[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(ranked, 0.0, 1.0)
    q[ok] = out
    return q
