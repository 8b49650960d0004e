"""Networks of the panel-imputation GAN: embedding -> image on a target geometry.

Tensor maths only; the training loop lives in :mod:`sigel.tasks.impute`.

Design (see ``docs/design.md`` §7, "Imputation for targeted panels"):

- :class:`MemoryBank` -- a learnable bank of ``M`` prototype vectors (keys and
  values). A gene's hidden code ``h`` queries the bank by scaled dot-product
  attention and reads ``r = softmax(q(h) K^T / sqrt(d)) V``; the code passed on
  is ``LayerNorm(h + r)``. The prototypes are learned *feature* prototypes: a
  small dictionary of recurring spatial motifs (layers, blobs, gradients ...)
  shared by all genes. The intent, with few training genes (a panel of tens
  to hundreds), is to stabilise the generator: codes are pulled toward
  reusable motifs instead of memorising single training images, and a query
  gene far from all training genes still reads a plausible mixture of motifs
  (``n_prototypes=0`` disables the bank, for ablations). The attention
  weights are returned, so a caller can inspect which prototypes a gene uses.
- :class:`ImageGenerator` -- MLP on the (standardised) embedding -> memory
  bank -> linear "seed" image at ``1 / 2**s`` of the target resolution ->
  ``s - 1`` stages of (bilinear x2 upsampling, two 3x3 convolutions), every
  stage also seeing fixed coordinate channels (row, column) and the tissue
  mask at its resolution (CoordConv), so that position-dependent patterns
  are easy to express -> a last x2 transposed convolution (a learned 2x2
  sub-pixel pattern; cheap at full resolution) -> 1x1 convolution (again
  with coordinates and mask) and a sigmoid: images live on the target
  images' scale ``[0, 1]`` (see :class:`sigel.GeneImages`, ``scale='quantile'``).
  Off-tissue pixels are set to 0. The output is cropped to the target
  ``(H, W)``; parameters grow with the seed size ``(H W / 4**s)``, not with
  the number of genes. Built with ``prior=True`` it refines a given prior
  image (in imputation: the read-out of a :class:`MeasuredImageBank`, kept
  as the generator's ``measured`` attribute): the prior is one more input of
  the last read-out, whose output is added to ``logit(prior)`` before the
  sigmoid and starts at 0.
- :class:`MeasuredImageBank` -- where that prior comes from: a bank whose
  keys are the measured genes' embeddings and whose values are their measured
  images. A gene reads ``softmax(cos(z, k_j) / tau) @ images``, every
  measured gene weighted by its similarity at a temperature ``tau`` that is
  trained with the generator (starts at ``MeasuredImageBank.TAU``); a
  training gene is left out of its own read-out (the situation of a query
  gene).
- :class:`ProjectionDiscriminator` -- a conditional critic in the style of
  Miyato & Koyama (2018): spectral-normalised strided convolutions over
  (image, tissue mask) -> global mean pooling over tissue -> feature ``phi``;
  ``D(x, z) = w^T phi + <E z, phi>`` with ``E`` a linear projection of the
  gene's embedding. Trained with the hinge loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MemoryBank", "MeasuredImageBank", "ImageGenerator", "ProjectionDiscriminator", "n_upsampling_stages"]


def n_upsampling_stages(height: int, width: int, min_seed: int = 4, max_stages: int = 4) -> int:
    """Number of x2 stages so that the seed image's short side is about ``min_seed`` pixels."""
    short = max(1, min(int(height), int(width)))
    s = int(math.floor(math.log2(max(short / float(min_seed), 1.0))))
    return int(min(max(s, 0), max_stages))


class MemoryBank(nn.Module):
    """Attention read-out from a learnable bank of ``n_slots`` prototype vectors.

    Parameters
    ----------
    dim
        Width of the codes and prototypes.
    n_slots
        Number of prototypes ``M``.
    """

    def __init__(self, dim: int, n_slots: int = 32):
        super().__init__()
        self.dim = int(dim)
        self.n_slots = int(n_slots)
        self.query = nn.Linear(dim, dim, bias=False)
        self.keys = nn.Parameter(torch.randn(n_slots, dim) / math.sqrt(dim))
        self.values = nn.Parameter(torch.randn(n_slots, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor):
        """Return ``(LayerNorm(h + read), attention (B, M))``."""
        att = torch.softmax(self.query(h) @ self.keys.t() / math.sqrt(self.dim), dim=-1)
        return self.norm(h + att @ self.values), att


class MeasuredImageBank(nn.Module):
    """Attention read-out of the measured genes' images, keyed by their embeddings.

    ``forward(z)`` returns ``softmax(cos(z, keys) / tau) @ values``: each row
    a convex mix of the measured images, weighted by the cosine similarity of
    embeddings at a learned temperature ``tau`` (starts at :attr:`TAU`). The
    temperature is the bank's only parameter, so it can be trained on a
    handful of measured genes without over-fitting them.

    Parameters
    ----------
    keys
        ``(n, D)`` embeddings of the measured genes.
    values
        ``(n, P)`` their images, flattened (``P = H * W``), in [0, 1].
    """

    TAU = 0.2

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        keys = torch.as_tensor(keys, dtype=torch.float32)
        self.register_buffer("keys", F.normalize(keys, dim=1), persistent=True)
        self.register_buffer("values", torch.as_tensor(values, dtype=torch.float32), persistent=True)
        self.log_tau = nn.Parameter(torch.tensor(math.log(self.TAU)))

    @property
    def tau(self) -> float:
        """The current temperature."""
        return float(self.log_tau.detach().exp())

    def forward(self, z: torch.Tensor, exclude: torch.Tensor | None = None):
        """Return ``(images (B, P), attention (B, n))``; ``exclude`` (B,) leaves out one bank entry per row."""
        logits = F.normalize(z, dim=1) @ self.keys.t() / self.log_tau.exp()
        if exclude is not None:
            logits = logits.index_put((torch.arange(len(z), device=z.device), exclude.to(z.device)),
                                      torch.tensor(float("-inf"), device=z.device, dtype=logits.dtype))
        att = torch.softmax(logits, dim=-1)
        return att @ self.values, att


def _coord_channels(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(1, 3, h, w)``: row and column coordinates in [-1, 1] and the tissue mask at this size."""
    dev, dt = mask.device, mask.dtype
    rr = torch.linspace(-1, 1, h, device=dev, dtype=dt)[:, None].expand(h, w)
    cc = torch.linspace(-1, 1, w, device=dev, dtype=dt)[None, :].expand(h, w)
    m = F.adaptive_max_pool2d(mask[None, None], (h, w))[0, 0]
    return torch.stack([rr, cc, m])[None]


class ImageGenerator(nn.Module):
    """Generator: gene embedding -> gene image on a fixed target geometry.

    Parameters
    ----------
    embed_dim
        Dimension ``D`` of the gene embeddings (the condition).
    mask
        ``(H, W)`` bool/float tissue mask of the target images.
    hidden
        Width of the hidden code.
    n_prototypes
        Slots of the :class:`MemoryBank` (0 disables the bank).
    channels
        Channels of the seed image; halved per stage (at least 16).
    dropout
        Dropout on the hidden code while training.
    min_seed
        Short side of the seed image in pixels.
    prior
        The generator refines a given prior image (``forward(z, prior=...)``):
        the prior enters the last 1x1 read-out as a channel and the output is
        ``sigmoid(logit(prior) + read-out)``; the read-out starts at 0, so an
        untrained generator returns the prior.
    """

    def __init__(self, embed_dim: int, mask, *, hidden: int = 128, n_prototypes: int = 32, channels: int = 64,
                 dropout: float = 0.1, min_seed: int = 4, prior: bool = False):
        super().__init__()
        self.prior = bool(prior)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        H, W = mask.shape
        self.out_hw = (int(H), int(W))
        self.n_stages = n_upsampling_stages(H, W, min_seed)
        f = 2 ** self.n_stages
        self.seed_hw = (-(-H // f), -(-W // f))
        self.register_buffer("mask", mask, persistent=True)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(),
        )
        self.bank = MemoryBank(hidden, n_prototypes) if n_prototypes and n_prototypes > 0 else None
        self.drop = nn.Dropout(dropout)
        c = int(channels)
        self.channels = c
        self.fc = nn.Linear(hidden, c * self.seed_hw[0] * self.seed_hw[1])
        self.seed_conv = nn.Sequential(nn.Conv2d(c + 3, c, 3, padding=1), nn.GELU())
        stages = []
        for _ in range(max(self.n_stages - 1, 0)):
            c_out = max(c // 2, 16)
            stages.append(nn.ModuleList([
                nn.Conv2d(c + 3, c_out, 3, padding=1),
                nn.Conv2d(c_out, c_out, 3, padding=1),
            ]))
            c = c_out
        self.stages = nn.ModuleList(stages)
        # last x2 step: a learned 2x2 sub-pixel pattern (transposed convolution), then a 1x1 read-out that
        # also sees the full-resolution coordinates and mask (full-resolution 3x3 convolutions cost ~5x more)
        c_last = 8
        self.last_up = nn.ConvTranspose2d(c, c_last, kernel_size=2, stride=2) if self.n_stages > 0 else None
        self.out = nn.Conv2d((c_last if self.n_stages > 0 else c) + 3 + int(self.prior), 1, 1)
        if self.prior:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self._coords: dict = {}
        self.measured: MeasuredImageBank | None = None  # the prior's bank, attached by the imputation

    def _coord(self, h, w):
        key = (h, w, str(self.mask.device), self.mask.dtype)
        t = self._coords.get(key)
        if t is None:
            t = _coord_channels(self.mask, h, w)
            self._coords[key] = t
        return t

    def code(self, z: torch.Tensor):
        """Hidden code of embeddings ``z`` (B, D) after the memory bank; also the attention (or None)."""
        h = self.mlp(z)
        att = None
        if self.bank is not None:
            h, att = self.bank(h)
        return self.drop(h), att

    def forward(self, z: torch.Tensor, return_attention: bool = False, prior: torch.Tensor | None = None):
        """Images ``(B, H, W)`` in [0, 1] (0 off tissue) for embeddings ``z`` ``(B, D)``.

        ``prior``: ``(B, H, W)`` or ``(B, H * W)`` images in [0, 1], required
        by (and only by) a generator built with ``prior=True``.
        """
        if self.prior != (prior is not None):
            raise ValueError("this generator " + ("needs" if self.prior else "takes no") + " prior images")
        h, att = self.code(z)
        B = z.shape[0]
        sh, sw = self.seed_hw
        x = self.fc(h).view(B, self.channels, sh, sw)
        x = self.seed_conv(torch.cat([x, self._coord(sh, sw).expand(B, -1, -1, -1)], 1))
        for conv1, conv2 in self.stages:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            hh, ww = x.shape[-2:]
            x = F.gelu(conv1(torch.cat([x, self._coord(hh, ww).expand(B, -1, -1, -1)], 1)))
            x = F.gelu(conv2(x)) + x
        if self.last_up is not None:
            x = F.gelu(self.last_up(x))
        hh, ww = x.shape[-2:]
        feats = [x, self._coord(hh, ww).expand(B, -1, -1, -1)]
        if self.prior:
            H, W = self.out_hw
            p = prior.reshape(B, 1, H, W).to(x.dtype).clamp(1e-4, 1 - 1e-4)
            feats.append(F.pad(p, (0, ww - W, 0, hh - H)))
        x = self.out(torch.cat(feats, 1))[:, 0]
        x = x[:, : self.out_hw[0], : self.out_hw[1]]
        if self.prior:
            x = x + torch.logit(p[:, 0])
        img = torch.sigmoid(x) * self.mask
        return (img, att) if return_attention else img


class ProjectionDiscriminator(nn.Module):
    """Conditional critic ``D(image, embedding)`` with a projection term.

    Parameters
    ----------
    embed_dim
        Dimension of the conditioning embedding.
    mask
        ``(H, W)`` tissue mask (given to the critic as a second channel and
        used to pool features over tissue only).
    channels
        Channels of the first convolution (doubled per stride-2 stage, max 128).
    n_stages
        Stride-2 stages.
    """

    def __init__(self, embed_dim: int, mask, *, channels: int = 16, n_stages: int = 3):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        mask = torch.as_tensor(mask, dtype=torch.float32)
        self.register_buffer("mask", mask, persistent=True)
        layers = []
        c_in, c = 2, int(channels)
        for _ in range(int(n_stages)):
            layers += [sn(nn.Conv2d(c_in, c, 3, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in, c = c, min(c * 2, 128)
        self.features = nn.Sequential(*layers)
        self.n_features = c_in
        self.linear = sn(nn.Linear(c_in, 1))
        self.project = sn(nn.Linear(embed_dim, c_in, bias=False))

    def forward(self, img: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Critic scores ``(B,)`` for images ``(B, H, W)`` conditioned on embeddings ``(B, D)``."""
        B = img.shape[0]
        m = self.mask.expand(B, -1, -1)
        x = torch.stack([img * m, m], dim=1)
        f = self.features(x)
        mp = F.adaptive_max_pool2d(self.mask[None, None], f.shape[-2:])
        phi = (f * mp).sum((2, 3)) / mp.sum().clamp(min=1.0)
        return self.linear(phi)[:, 0] + (self.project(z) * phi).sum(1)
