"""The similarity scaffold: a sparse k-nearest-neighbour gene graph from the images.

Computed once per fit from the gene images themselves (docs/design.md §6):
each image is smoothed inside the tissue (a masked box filter, so background
never bleeds in), optionally pooled to a coarser grid, centred and scaled to
unit length over the tissue pixels; the cosine of two such vectors is the
Pearson correlation of the smoothed images. Neighbours come from a chunked
``(chunk x G)`` matrix product with a top-k per chunk, so memory stays
``O(chunk * G + G * pixels)`` and no ``G x G`` matrix is ever held.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .mae import gaussian_taps

__all__ = ["GeneGraph", "smoothed_image_features", "principal_scores", "image_knn_graph"]


@dataclass
class GeneGraph:
    """A k-nearest-neighbour graph between genes stored as fixed-width arrays.

    Attributes
    ----------
    indices
        ``(G, k)`` long tensor: the neighbours of every gene (row order of the
        images), most similar first.
    weights
        ``(G, k)`` float tensor: non-negative edge weights (the correlation of
        the smoothed images, clipped at 0).
    similarity
        ``(G, k)`` float tensor: the raw correlations.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    similarity: torch.Tensor

    @property
    def n_genes(self) -> int:
        """Number of genes (rows)."""
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        """Neighbours per gene."""
        return int(self.indices.shape[1])

    def to(self, device) -> "GeneGraph":
        """Move the tensors to ``device``."""
        return GeneGraph(self.indices.to(device), self.weights.to(device), self.similarity.to(device))

    def to_scipy(self) -> sp.csr_matrix:
        """The graph as a ``(G, G)`` sparse CSR matrix of weights (directed kNN edges)."""
        g, k = self.indices.shape
        rows = np.repeat(np.arange(g), k)
        return sp.csr_matrix(
            (self.weights.detach().cpu().numpy().ravel(), (rows, self.indices.detach().cpu().numpy().ravel())),
            shape=(g, g),
        )


def _smoothing_kernel(smooth: str, smooth_radius: int, sigma: float, device):
    """2-d kernel of the masked filter: a ``(2r+1)^2`` box or a Gaussian truncated at 3 sigma (``None``: no filter)."""
    if smooth == "box":
        if smooth_radius <= 0:
            return None, 0
        size = 2 * smooth_radius + 1
        return torch.ones(1, 1, size, size, device=device, dtype=torch.float32), smooth_radius
    if smooth == "gaussian":
        if sigma <= 0:
            return None, 0
        g = gaussian_taps(sigma, device, torch.float32)
        return (g[:, None] * g[None, :])[None, None], len(g) // 2
    raise ValueError(f"smooth must be 'box' or 'gaussian', got {smooth!r}")


def smoothed_image_features(images, *, smooth: str = "box", smooth_radius: int = 1, sigma: float = 2.0,
                            max_pixels: int = 1024, batch_size: int = 512, device=None) -> torch.Tensor:
    """Unit-length, centred, smoothed in-tissue pixel vectors of every gene.

    Parameters
    ----------
    images
        :class:`sigel.GeneImages`.
    smooth
        ``'box'`` (a ``(2 * smooth_radius + 1)``-pixel square) or
        ``'gaussian'`` (``sigma`` pixels, truncated at 3 sigma): the masked
        filter applied inside the tissue before anything else.
    smooth_radius
        Radius of the box filter (pixels); 0 = no smoothing.
    sigma
        Width of the Gaussian filter (pixels); 0 = no smoothing.
    max_pixels
        When the image has more pixels than this, average-pool (inside the
        tissue) by the smallest integer factor that brings it below.
    batch_size
        Genes densified at a time.
    device
        Torch device for the computation.

    Returns
    -------
    torch.Tensor
        ``(G, P)`` float32; rows have zero mean and unit norm (all-zero rows
        for genes that are constant over the tissue).
    """
    H, W = images.height, images.width
    mask = torch.from_numpy(images.mask).to(device=device, dtype=torch.float32)[None, None]
    factor = 1
    while (-(-H // factor)) * (-(-W // factor)) > max_pixels:
        factor += 1
    ker, pad = _smoothing_kernel(smooth, smooth_radius, sigma, device)

    def _filter(t):
        if ker is not None:
            t = F.conv2d(t, ker, padding=pad)
        if factor > 1:
            t = F.avg_pool2d(t, factor, stride=factor, ceil_mode=True)
        return t

    msm = _filter(mask)
    keep = (msm[0, 0] > 0).flatten()
    if factor > 1:  # pooled cells must hold tissue
        keep &= (F.avg_pool2d(mask, factor, stride=factor, ceil_mode=True)[0, 0] > 0).flatten()
    out = []
    G = images.n_genes
    for s in range(0, G, batch_size):
        idx = np.arange(s, min(s + batch_size, G))
        v = torch.from_numpy(images.dense(idx)).to(device=device, dtype=torch.float32)[:, None]
        v = _filter(v * mask) / msm.clamp(min=1e-12)
        f = v.flatten(1)[:, keep]
        f = f - f.mean(1, keepdim=True)
        out.append(F.normalize(f, dim=1))
    return torch.cat(out, 0)


def principal_scores(feats: torch.Tensor, n_components: int | None) -> torch.Tensor:
    """Project gene feature rows onto their leading principal axes (denoising before the kNN search).

    The pixels are centred over genes and the ``(P x P)`` covariance is
    eigen-decomposed in float64 (deterministic, no random projections); the
    ``(G x n_components)`` scores are returned with unit-length rows, so their
    dot products are cosines. Dropping the trailing axes removes pixel noise
    that no other gene shares, which is what makes sparse genes' raw
    correlations unreliable neighbours.

    Parameters
    ----------
    feats
        ``(G, P)`` features (e.g. :func:`smoothed_image_features`).
    n_components
        Number of axes kept; ``None`` or ``>= min(G, P)``: ``feats`` unchanged.

    Returns
    -------
    torch.Tensor
        ``(G, c)`` float32 with unit-length rows.
    """
    G, P = feats.shape
    if n_components is None or n_components >= min(G, P):
        return feats
    f = feats.double()
    f = f - f.mean(0, keepdim=True)
    evals, evecs = torch.linalg.eigh(f.T @ f)
    axes = evecs[:, -int(n_components):].flip(1)
    axes = axes * torch.where(axes.sum(0) < 0, -1.0, 1.0).to(axes.dtype)  # fixed sign per axis
    return F.normalize((f @ axes).float(), dim=1)


def image_knn_graph(images, k: int = 10, *, smooth: str = "box", smooth_radius: int = 1, sigma: float = 2.0,
                    n_components: int | None = None, max_pixels: int = 1024, chunk_size: int = 1024,
                    device=None) -> GeneGraph:
    """k-nearest-neighbour gene graph from the correlation of smoothed images.

    Parameters
    ----------
    images
        :class:`sigel.GeneImages`.
    k
        Neighbours per gene (capped at ``G - 1``).
    smooth, smooth_radius, sigma, max_pixels
        See :func:`smoothed_image_features`.
    n_components
        When set, neighbours are found on the leading ``n_components``
        principal axes of the smoothed images (:func:`principal_scores`)
        instead of on all pixels.
    chunk_size
        Genes per ``(chunk x G)`` similarity block.
    device
        Torch device for the computation (the result lives there).

    Returns
    -------
    GeneGraph
        Neighbour indices, weights (similarity clipped at 0) and raw
        similarities.

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(n_genes=60, seed=0)
    >>> images = sigel.GeneImages.from_anndata(adata)
    >>> g = image_knn_graph(images, k=5, smooth="gaussian", n_components=10)
    >>> tuple(g.indices.shape)
    (60, 5)
    """
    feats = smoothed_image_features(images, smooth=smooth, smooth_radius=smooth_radius, sigma=sigma,
                                    max_pixels=max_pixels, device=device)
    feats = principal_scores(feats, n_components)
    G = feats.shape[0]
    k = int(max(min(k, G - 1), 1)) if G > 1 else 1
    idx_out, sim_out = [], []
    for s in range(0, G, chunk_size):
        e = min(s + chunk_size, G)
        sim = feats[s:e] @ feats.T  # (c, G)
        rows = torch.arange(e - s, device=sim.device)
        sim[rows, rows + s] = -float("inf")  # no self-loops
        val, ind = torch.topk(sim, k, dim=1)
        idx_out.append(ind)
        sim_out.append(val)
    ind = torch.cat(idx_out, 0)
    val = torch.cat(sim_out, 0)
    val = torch.where(torch.isfinite(val), val, torch.zeros_like(val))
    return GeneGraph(indices=ind, weights=val.clamp(min=0.0), similarity=val)
