"""Module III: self-paced pseudo-contrastive refinement (losses and selection).

Pure tensor functions; the training loop (:mod:`sigel.train.trainer`) calls
them once per epoch (:func:`select_confident`, :func:`schedule`) and once per
mini-batch (:func:`refinement_losses`). Every loss function returns a scalar;
:func:`refinement_losses` returns a dict of named, *unweighted* terms plus
the weighted ``'total'`` so the history can show each term.

Embeddings are compared after centring on the mixture's overall mean
(``sum_k pi_k mu_k``): cosine similarities of centred vectors measure
direction *relative to the cloud*, which stays informative when every gene
vector lies in the same orthant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._defaults import HYPER as _D

__all__ = [
    "RefineState",
    "select_confident",
    "schedule",
    "prototype_contrastive_loss",
    "mixture_nll_loss",
    "scaffold_contrastive_loss",
    "view_invariance_loss",
    "spread_loss",
    "thin_images",
    "refinement_losses",
    "label_change",
]


@dataclass
class RefineState:
    """Everything the per-batch losses need from the current epoch (all detached).

    Attributes
    ----------
    embeddings
        ``(G, D)`` gene vectors of the epoch (no grad).
    labels
        ``(G,)`` hard context of every gene (``None`` before the first mixture fit).
    selected
        ``(G,)`` bool, genes whose pseudo-label is trusted this epoch.
    prototypes
        ``(K, D)`` context prototypes (mixture means).
    center
        ``(D,)`` overall mean used to centre vectors before cosine similarities.
    bank
        ``(G, D)`` centred, L2-normalised embeddings (memory bank of the
        scaffold term).
    mixture
        The fitted :class:`sigel.model.mixture.StudentTMixture` (for ``log_prob``).
    graph
        :class:`sigel.model.scaffold.GeneGraph` or ``None``.
    weights
        Loss weights for this epoch: keys ``recon``, ``contrastive``,
        ``mixture``, ``scaffold``, ``invariance``.
    temperature
        Softmax temperature of the contrastive terms.
    self_weight
        Weight of a gene's own bank entry among its scaffold positives.
    view_temperature
        Softmax temperature of the view-invariance term.
    """

    embeddings: torch.Tensor
    labels: torch.Tensor | None
    selected: torch.Tensor | None
    prototypes: torch.Tensor | None
    center: torch.Tensor
    bank: torch.Tensor
    mixture: object | None
    graph: object | None
    weights: dict
    temperature: float = _D["temperature"]
    self_weight: float = 1.0
    view_temperature: float = _D["view_temperature"]


# ----------------------------------------------------------------- selection
def select_confident(resp: torch.Tensor, fraction: float) -> torch.Tensor:
    """Self-paced selection: per context, keep its most confident genes.

    Parameters
    ----------
    resp
        ``(G, K)`` memberships.
    fraction
        Share of each context's (hard-assigned) genes to keep, in ``(0, 1]``;
        at least one gene per non-empty context is kept.

    Returns
    -------
    torch.Tensor
        ``(G,)`` bool.
    """
    conf, labels = resp.max(1)
    G = resp.shape[0]
    if fraction >= 1.0:
        return torch.ones(G, dtype=torch.bool, device=resp.device)
    # sort by (label asc, confidence desc): a stable sort on confidence then on label
    order = torch.argsort(-conf, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    sorted_labels = labels[order]
    counts = torch.bincount(labels, minlength=resp.shape[1])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(G, device=resp.device) - starts[sorted_labels]
    n_keep = torch.ceil(counts.to(torch.float64) * float(fraction)).to(torch.long).clamp(min=1)
    keep_sorted = rank < n_keep[sorted_labels]
    keep = torch.zeros(G, dtype=torch.bool, device=resp.device)
    keep[order] = keep_sorted
    return keep


def schedule(epoch: int, start: int, length: int, v0: float, v1: float) -> float:
    """Linear ramp from ``v0`` (at ``start``) to ``v1`` (at ``start + length``), constant outside.

    Parameters
    ----------
    epoch
        Current epoch (0-based).
    start
        Epoch where the ramp begins.
    length
        Ramp length in epochs (``<= 0`` jumps straight to ``v1``).
    v0, v1
        Values at both ends.
    """
    if length <= 0:
        return float(v1) if epoch >= start else float(v0)
    t = min(max((epoch - start) / float(length), 0.0), 1.0)
    return float(v0 + (v1 - v0) * t)


# --------------------------------------------------------------------- terms
def prototype_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                               center: torch.Tensor, temperature: float = _D["temperature"],
                               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pseudo-contrastive loss: pull each gene to its context prototype, push from the others.

    ``-log softmax_k(cos(z - c, mu_k - c) / T)[label]``: the own prototype is
    the positive, every other prototype a negative (the negatives are what
    prevents collapse onto one point).

    Parameters
    ----------
    z
        ``(B, D)`` embeddings (with grad).
    labels
        ``(B,)`` pseudo-labels.
    prototypes
        ``(K, D)`` context prototypes.
    center
        ``(D,)`` centring vector.
    temperature
        Softmax temperature.
    weight
        Optional ``(B,)`` per-gene weights (0 drops a gene).

    Returns
    -------
    torch.Tensor
        Scalar (0 when no gene carries weight).
    """
    zc = F.normalize(z.float() - center, dim=1)
    pc = F.normalize(prototypes.float() - center, dim=1)
    logits = zc @ pc.T / temperature
    ce = F.cross_entropy(logits, labels, reduction="none")
    if weight is None:
        return ce.mean()
    w = weight.to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp(min=1.0)


def mixture_nll_loss(z: torch.Tensor, mixture, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of embeddings under the current (fixed) mixture, per dimension.

    Parameters
    ----------
    z
        ``(B, D)`` embeddings (with grad).
    mixture
        Fitted mixture with a differentiable ``log_prob``.
    weight
        Optional ``(B,)`` weights.

    Returns
    -------
    torch.Tensor
        Scalar ``-mean(log p(z)) / D``.
    """
    lp = mixture.log_prob(z.float()) / z.shape[1]
    if weight is None:
        return -lp.mean()
    w = weight.to(lp.dtype)
    return -(lp * w).sum() / w.sum().clamp(min=1.0)


def scaffold_contrastive_loss(z: torch.Tensor, idx: torch.Tensor, graph, bank: torch.Tensor,
                              center: torch.Tensor, temperature: float = _D["temperature"],
                              self_weight: float = 1.0) -> torch.Tensor:
    """Graph smoothness on the image scaffold, as a contrastive term against a memory bank.

    Each gene is pulled toward its image neighbours (and its own bank entry)
    and, through the softmax over all genes, away from the rest:
    ``-sum_j w_ij log softmax_g(cos(z_i, Z_g) / T)[j]``. The positives are the
    scaffold neighbours, weighted by their (clipped) image correlation, plus
    the gene itself with weight ``self_weight``; weights are normalised to sum
    to one per gene. A gene whose image resembles others strongly is thus
    mostly pulled toward them, while a gene with only weak, chance neighbours
    (a sparse, pattern-free gene) is mostly asked to stay recognisable as
    itself: chance neighbours do not drag it around. ``Z`` is the epoch's
    (detached) embeddings of every gene. The negatives keep the term from
    being minimised by collapsing everything onto one point, which a plain
    squared-distance smoothness would reward.

    Parameters
    ----------
    z
        ``(B, D)`` embeddings of the batch (with grad), usually of an
        augmented (thinned) view, so that the self-positive teaches invariance.
    idx
        ``(B,)`` gene indices of the batch (rows of ``graph`` and ``bank``).
    graph
        :class:`sigel.model.scaffold.GeneGraph` (same device as ``z``).
    bank
        ``(G, D)`` detached, centred and L2-normalised embeddings of all genes.
    center
        ``(D,)`` centring vector.
    temperature
        Softmax temperature.
    self_weight
        Weight of the gene itself among its positives (0: neighbours only,
        and the gene is removed from its own softmax).

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    zc = F.normalize(z.float() - center, dim=1)
    logits = zc @ bank.T / temperature  # (B, G)
    rows = torch.arange(len(idx), device=z.device)
    if self_weight <= 0:
        logits = logits.index_put((rows, idx), torch.tensor(-float("inf"), device=z.device))
    logp = torch.log_softmax(logits, dim=1)
    nb = graph.indices[idx]
    w = graph.weights[idx].to(logp.dtype)
    lp = torch.gather(logp, 1, nb)
    num = (w * lp).sum(1)
    den = w.sum(1)
    if self_weight > 0:
        num = num + self_weight * logp[rows, idx]
        den = den + self_weight
    has = den > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    return -(num[has] / den[has]).mean()


def view_invariance_loss(z1: torch.Tensor, z2: torch.Tensor, idx: torch.Tensor, bank: torch.Tensor,
                         center: torch.Tensor, temperature: float = _D["view_temperature"]) -> torch.Tensor:
    """Sampling-noise invariance: two count-thinned views of a gene are one gene (InfoNCE against a bank).

    For each gene of the batch, its second view is the positive and every
    *other* gene's (detached) vector of the epoch is a negative:
    ``-log softmax([cos(z1_i, z2_i), cos(z1_i, Z_g) for g != i] / T)[0]``,
    symmetrised over the two views. Cosines are taken after centring on
    ``center``. The positive teaches that a deeper and a shallower
    measurement of the same pattern must give the same vector, so sampling
    noise and depth cannot be what the vector encodes; the thousands of
    negatives spread the genes over all directions of the space, which keeps
    it from collapsing onto a few axes.

    Parameters
    ----------
    z1, z2
        ``(B, D)`` embeddings of two independently thinned views (with grad).
    idx
        ``(B,)`` gene rows of the batch (rows of ``bank``).
    bank
        ``(G, D)`` detached, centred, L2-normalised embeddings of all genes.
    center
        ``(D,)`` centring vector.
    temperature
        Softmax temperature.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    u1 = F.normalize(z1.float() - center, dim=1)
    u2 = F.normalize(z2.float() - center, dim=1)
    rows = torch.arange(len(idx), device=z1.device)
    pos = (u1 * u2).sum(1, keepdim=True) / temperature
    loss = 0.0
    for u in (u1, u2):
        neg = (u @ bank.T / temperature).index_put((rows, idx), torch.tensor(-float("inf"), device=z1.device))
        loss = loss - torch.log_softmax(torch.cat([pos, neg], dim=1), dim=1)[:, 0].mean()
    return loss / 2.0


def spread_loss(z: torch.Tensor, target_std: float = 1.0) -> torch.Tensor:
    """Anti-collapse regulariser on a batch of vectors (variance and covariance terms, as in VICReg).

    ``mean_d relu(target_std - std_d) + sum_{d != e} cov_de^2 / D``: every
    dimension keeps a spread of at least ``target_std`` across the genes of
    the batch and the dimensions stay decorrelated, so the space cannot fold
    onto a few directions (dimensional collapse). It needs no negatives, so
    genes that truly share a pattern are not pushed apart.

    Parameters
    ----------
    z
        ``(B, D)`` embeddings (with grad), ``B >= 2``.
    target_std
        Per-dimension standard deviation below which the hinge acts.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    z = z.float()
    B, D = z.shape
    if B < 2:
        return z.sum() * 0.0
    zc = z - z.mean(0)
    std = torch.sqrt(zc.var(0) + 1e-4)
    var_term = torch.relu(target_std - std).mean()
    cov = zc.T @ zc / (B - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return var_term + (off**2).sum() / D


def thin_images(x: torch.Tensor, max_drop: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augmentation: simulate shallower sequencing by dropping in-tissue pixel values.

    Each gene draws a drop rate ``r ~ U(0, max_drop)`` and every pixel value
    is zeroed with probability ``r`` (the tissue-mask channel is kept). A
    densely expressed gene then looks like a sparser one with the same
    pattern; asking both views for the same vector keeps detection rate out
    of the embedding (docs/design.md §4).

    Parameters
    ----------
    x
        ``(B, 2, H, W)`` value + mask channels.
    max_drop
        Largest drop rate, in ``[0, 1)``.
    generator
        Torch generator on ``x``'s device.

    Returns
    -------
    torch.Tensor
        A new ``(B, 2, H, W)`` tensor.
    """
    if max_drop <= 0:
        return x
    B = x.shape[0]
    rate = torch.rand(B, 1, 1, device=x.device, generator=generator) * max_drop
    keep = torch.rand(x[:, 0].shape, device=x.device, generator=generator) >= rate
    return torch.stack([x[:, 0] * keep.to(x.dtype), x[:, 1]], dim=1)


def refinement_losses(recon: torch.Tensor, z: torch.Tensor, idx: torch.Tensor, state: RefineState,
                      z2: torch.Tensor | None = None, spread_batch: torch.Tensor | None = None) -> dict:
    """All loss terms for one mini-batch.

    Parameters
    ----------
    recon
        Scalar reconstruction loss of the batch (Module I; always included).
    z
        ``(B, D)`` embeddings of the batch (with grad).
    idx
        ``(B,)`` gene indices of the batch.
    state
        The epoch's :class:`RefineState`.
    z2
        ``(B, D)`` embeddings of a second, independently thinned view (with
        grad), for the ``'invariance'`` term (:func:`view_invariance_loss`).
    spread_batch
        The vectors the ``'spread'`` term (:func:`spread_loss`) takes its batch
        statistics from (default ``z``; a data-parallel step passes the whole
        batch, its own rows live and the other ranks' rows detached).

    Returns
    -------
    dict
        ``{'recon', 'contrastive', 'mixture', 'scaffold', 'invariance',
        'total'}``; terms whose weight is 0 are omitted (except ``recon``
        and ``total``).
    """
    w = state.weights
    out = {"recon": recon}
    total = w.get("recon", 1.0) * recon
    if w.get("contrastive", 0.0) > 0 and state.labels is not None:
        sel = state.selected[idx] if state.selected is not None else None
        if sel is None or bool(sel.any()):
            c = prototype_contrastive_loss(z, state.labels[idx], state.prototypes, state.center,
                                           state.temperature, sel)
        else:
            c = z.sum() * 0.0
        out["contrastive"] = c
        total = total + w["contrastive"] * c
    if w.get("mixture", 0.0) > 0 and state.mixture is not None:
        m = mixture_nll_loss(z, state.mixture)
        out["mixture"] = m
        total = total + w["mixture"] * m
    if w.get("scaffold", 0.0) > 0 and state.graph is not None:
        s = scaffold_contrastive_loss(z, idx, state.graph, state.bank, state.center, state.temperature,
                                      state.self_weight)
        out["scaffold"] = s
        total = total + w["scaffold"] * s
    if w.get("invariance", 0.0) > 0 and z2 is not None:
        if state.view_temperature > 0:
            v = view_invariance_loss(z, z2, idx, state.bank, state.center, state.view_temperature)
        else:  # plain agreement of the two views (mean squared difference)
            v = ((z.float() - z2.float()) ** 2).sum(1).mean()
        out["invariance"] = v
        total = total + w["invariance"] * v
    if w.get("spread", 0.0) > 0:
        sp_ = spread_loss(z if spread_batch is None else spread_batch)
        out["spread"] = sp_
        total = total + w["spread"] * sp_
    out["total"] = total
    return out


def label_change(prev: torch.Tensor | None, new: torch.Tensor) -> float:
    """Fraction of genes whose hard context differs between two epochs (``nan`` without a previous epoch)."""
    if prev is None:
        return math.nan
    return float((prev != new).to(torch.float32).mean())
