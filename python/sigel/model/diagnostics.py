"""Read-outs that say whether a gene space is healthy, computed on the embeddings alone.

Two failure modes of a learned gene space are cheap to see:

- **dimensional collapse**: the vectors use only a few directions.
  :func:`effective_rank` is ``exp`` of the entropy of the normalised singular
  values of the centred vectors (``D`` when every direction carries the same
  share, 1 when all genes lie on a line);
- **sampling noise encoded**: how sparsely a gene was measured can be read
  off its vector. :func:`ridge_cv_r2` is the cross-validated R^2 of a ridge
  read-out of a per-gene quantity (e.g. :func:`detection_rate`) from the
  vectors; low is good for detection rate.

The trainer records both every epoch (``history_['erank']`` and
``history_['r2_detection']``).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["effective_rank", "ridge_cv_r2", "detection_rate"]


def effective_rank(Z) -> float:
    """Effective rank of the centred vectors ``Z`` (``G x D``): exp(entropy of normalised singular values).

    >>> import torch
    >>> round(effective_rank(torch.randn(2000, 8, generator=torch.Generator().manual_seed(0))), 1)
    8.0
    """
    Z = torch.as_tensor(Z, dtype=torch.float64)
    if Z.shape[0] < 2:
        return float("nan")
    s = torch.linalg.svdvals(Z - Z.mean(0))
    tot = s.sum()
    if tot <= 0:
        return 0.0
    p = s / tot
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def ridge_cv_r2(Z, y, *, folds: int = 5, alpha: float = 1.0, seed: int = 0) -> float:
    """Cross-validated R^2 of a ridge regression of ``y`` on the standardised columns of ``Z``.

    Closed form per fold (``D x D`` solve), so it costs ``O(G D^2)``.

    Parameters
    ----------
    Z
        ``(G, D)`` vectors.
    y
        ``(G,)`` per-gene quantity.
    folds
        Number of folds (genes assigned at random, seeded).
    alpha
        Ridge penalty on the standardised scale (times the fold's size).
    seed
        Seeds the fold assignment.
    """
    Z = torch.as_tensor(Z, dtype=torch.float64).cpu()
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64).cpu()
    G, D = Z.shape
    if G < folds or float(y.var()) <= 0:
        return float("nan")
    fold = torch.from_numpy(np.random.default_rng(seed).permutation(G) % folds)
    pred = torch.empty_like(y)
    for f in range(folds):
        te, tr = fold == f, fold != f
        Xtr, ytr = Z[tr], y[tr]
        mu, sd = Xtr.mean(0), Xtr.std(0).clamp(min=1e-12)
        A = (Xtr - mu) / sd
        coef = torch.linalg.solve(A.T @ A + alpha * len(A) * 1e-3 * torch.eye(D, dtype=A.dtype),
                                  A.T @ (ytr - ytr.mean()))
        pred[te] = ((Z[te] - mu) / sd) @ coef + ytr.mean()
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def detection_rate(images) -> np.ndarray | None:
    """Fraction of in-tissue pixels where each gene is non-zero (``None`` when the images do not say)."""
    values = getattr(images, "values", None)
    mask = getattr(images, "mask", None)
    if values is None or mask is None or not hasattr(values, "indptr"):
        return None
    return np.diff(values.indptr) / max(int(np.asarray(mask).sum()), 1)
