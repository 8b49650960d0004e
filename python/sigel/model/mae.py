"""Module I: masked autoencoder over gene images (local spatial context).

Tensor maths only, in named steps (``patchify`` -> ``mask_tissue_patches`` ->
``encode`` -> ``decode`` -> ``loss``; ``embed`` for the gene vector). Inputs
are dense batches ``(B, 2, H, W)`` from :meth:`sigel.GeneImages.to_tensor`:
channel 0 holds the scaled expression values, channel 1 the tissue mask.

Design choices (see ``docs/design.md`` §3):

- Tokens are the *in-tissue* patches (a patch is in tissue when any of its
  pixels is). Background patches hold no information (value 0, mask 0) and
  are never encoded; this also makes the encoder cost scale with the tissue
  area, not the bounding box.
- Masking draws a fraction of the in-tissue patches per sample; the encoder
  sees the visible ones only. Samples of one batch may have different tissue
  masks: tokens are gathered into a padded ``(B, L, C)`` block with a validity
  mask (no padding when the masks agree, the usual case).
- Positions are fixed 2-D sin-cos tables built for the actual patch grid of
  the batch (cached per grid), so a new sample on another grid works.
- The decoder is convolutional: decoded visible tokens and a learned mask
  token are put back on the patch grid (plus the patch-level tissue mask as a
  channel), mixed by a 3x3 convolution and upsampled x2 per stage (transposed
  convolution + 3x3 convolution); the last x2 step maps straight to pixels.
  The gene vector (pooled over the visible tokens) is added at every grid
  position, so hidden regions far from any visible patch can only be
  reconstructed through it: the vector has to summarise the whole image.
- The gene vector pools the tokens with their mean plus a few learned
  attention queries (position-aware weighted means), then a projection head.
  A plain mean of near-linear token features mostly measures how much of the
  tissue expresses the gene (docs/design.md §4); the attention
  read-outs say where.
- Each block's output projections start scaled by 0.1 (the encoder starts
  near the identity), which keeps the deep pre-norm encoder stable at the
  learning rates a small model needs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._defaults import HYPER as _H

__all__ = ["MaskedAutoencoder", "sincos_pos_embed_2d", "TokenBatch"]


# --------------------------------------------------------------------- helpers
def sincos_pos_embed_2d(grid_h: int, grid_w: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2-D sine-cosine positional embeddings for a ``grid_h x grid_w`` patch grid.

    Half of the channels encode the row, half the column (each with sines and
    cosines at geometrically spaced frequencies), as in the MAE reference.

    Parameters
    ----------
    grid_h, grid_w
        Patch grid size.
    dim
        Embedding width (must be divisible by 4).
    device, dtype
        Placement of the returned table.

    Returns
    -------
    torch.Tensor
        ``(grid_h * grid_w, dim)``; row ``i * grid_w + j`` is patch ``(i, j)``.
    """
    if dim % 4 != 0:
        raise ValueError(f"positional embedding width must be divisible by 4; got {dim}")
    quarter = dim // 4
    omega = torch.arange(quarter, dtype=torch.float64, device=device) / quarter
    omega = 1.0 / (10000.0 ** omega)
    rows = torch.arange(grid_h, dtype=torch.float64, device=device)
    cols = torch.arange(grid_w, dtype=torch.float64, device=device)
    rr, cc = torch.meshgrid(rows, cols, indexing="ij")
    out_r = rr.reshape(-1, 1) * omega[None, :]
    out_c = cc.reshape(-1, 1) * omega[None, :]
    emb = torch.cat([torch.sin(out_r), torch.cos(out_r), torch.sin(out_c), torch.cos(out_c)], dim=1)
    return emb.to(dtype)


class TokenBatch:
    """Tokens gathered for the encoder: a padded block plus bookkeeping.

    Attributes
    ----------
    ids
        ``(B, L)`` long: the patch index (row-major on the patch grid) of each
        gathered token; ``None`` when the tokens given to :meth:`MaskedAutoencoder.encode`
        are already the gathered ones (the sparse inference route builds them so;
        it never decodes, and :meth:`MaskedAutoencoder.decode` needs the ids).
    valid
        ``(B, L)`` bool: ``False`` for padding slots. ``None`` when every
        sample has ``L`` tokens (no padding).
    masked
        ``(B, N)`` bool: in-tissue patches hidden from the encoder (all
        ``False`` for an unmasked pass).
    tissue
        ``(B, N)`` bool: in-tissue patches.
    grid
        ``(grid_h, grid_w)``.
    """

    __slots__ = ("ids", "valid", "masked", "tissue", "grid")

    def __init__(self, ids, valid, masked, tissue, grid):
        self.ids, self.valid, self.masked, self.tissue, self.grid = ids, valid, masked, tissue, grid


# ---------------------------------------------------------------------- blocks
class _Attention(nn.Module):
    def __init__(self, width: int, n_heads: int):
        super().__init__()
        if width % n_heads != 0:
            raise ValueError(f"width ({width}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, attn_mask=None):
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return self.proj(cpu_attention(q, k, v, attn_mask).reshape(B, L, C))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


#: score-matrix elements per chunk of :func:`cpu_attention` (2 MB of float32: stays in cache)
_ATTN_CHUNK = 1 << 19


def cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask=None) -> torch.Tensor:
    """Softmax attention without gradients on CPU: batched matrix products over cache-sized chunks.

    The same arithmetic as ``F.scaled_dot_product_attention`` (scores scaled by
    ``1 / sqrt(d)``, masked keys at ``-inf``), faster for the encoder's shapes:
    torch's fused CPU kernel works in blocks sized for long sequences and wide
    heads, and with the encoder's ~70-130 tokens and heads of width 8 it runs
    at about two thirds of this speed (DLPFC 151673, 2 threads: a 71-token
    batch of 256 genes x 4 heads 12.3 ms fused, 8.0 ms here). With the
    default single head of width 32 the margin is smaller but holds (a
    micro-benchmark at 2 threads: 71 tokens 4.7 ms against 5.7 ms fused,
    130 tokens 11.2 ms against 12.7 ms). It also needs no padding of odd
    sequence lengths.

    Parameters
    ----------
    q, k, v
        ``(B, h, L, d)``.
    key_mask
        ``(B, 1, 1, L)`` bool, ``True`` where a key may be attended to, or ``None``.

    Returns
    -------
    torch.Tensor
        ``(B, L, h, d)`` (the layout the output projection reads).
    """
    B, h, L, d = q.shape
    qs = (q * d ** -0.5).reshape(B * h, L, d)
    kt = k.reshape(B * h, L, d).transpose(1, 2)
    vs = v.reshape(B * h, L, d)
    bias = None
    if key_mask is not None:
        bias = torch.zeros(B, 1, L, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~key_mask.reshape(B, 1, L), float("-inf")).repeat_interleave(h, 0)
    out = q.new_empty(B, L, h, d)
    heads_first = out.permute(0, 2, 1, 3)
    step = max(_ATTN_CHUNK // (h * L * L), 1)  # genes per chunk
    for i in range(0, B, step):
        j = min(i + step, B)
        s = slice(i * h, j * h)
        a = torch.bmm(qs[s], kt[s]) if bias is None else torch.baddbmm(bias[s], qs[s], kt[s])
        torch.softmax(a, -1, out=a)
        heads_first[i:j] = torch.bmm(a, vs[s]).view(j - i, h, L, d)
    return out


class _Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = max(int(round(width * mlp_ratio)), 1)
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, n_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x, attn_mask=None):
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


# ----------------------------------------------------------------------- model
def _band(n: int, k: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` symmetric banded matrix of the 1-d symmetric kernel ``k``: ``M[i, j] = k[j - i + r]``."""
    r = k.shape[0] // 2
    d = torch.arange(n, device=k.device)
    off = d[None, :] - d[:, None]
    return torch.where(off.abs() <= r, k[(off + r).clamp(0, 2 * r)], torch.zeros((), dtype=k.dtype, device=k.device))


def _normal_scores(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Normal scores of each image's tissue pixels: ``Phi^-1((rank + 0.5) / n)``, ties at their mean rank.

    ``v`` and ``m`` are ``(B, H, W)`` values and 0/1 tissue mask; pixels outside the tissue get 0.
    """
    B = v.shape[0]
    flat = v.reshape(B, -1).float()
    tis = m.reshape(B, -1) > 0
    keyed = torch.where(tis, flat, torch.full_like(flat, float("inf")))
    srt = torch.sort(keyed, dim=1).values.contiguous()
    q = keyed.contiguous()
    lo = torch.searchsorted(srt, q, right=False).float()
    hi = torch.searchsorted(srt, q, right=True).float()
    n = tis.sum(1, keepdim=True).clamp(min=1).float()
    u = ((lo + hi) / 2.0) / n  # mean rank (0-based) + 0.5, over n
    z = math.sqrt(2.0) * torch.erfinv((2.0 * u - 1.0).clamp(-1 + 1e-6, 1 - 1e-6))
    return torch.where(tis, z, torch.zeros_like(z)).reshape(v.shape).to(v.dtype)


def gaussian_taps(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unnormalised 1-d Gaussian of ``sigma`` pixels truncated at 3 sigma (at least 3 taps).

    The one Gaussian of the package's masked image filters (the encoder's
    input filter and the scaffold's); masked filters divide by the filtered
    mask, so the taps need not sum to one.
    """
    r = max(int(math.ceil(3.0 * sigma)), 1)
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    return torch.exp(-0.5 * (t / sigma) ** 2)


class MaskedAutoencoder(nn.Module):
    """Masked autoencoder with a transformer encoder and a convolutional decoder.

    Parameters
    ----------
    patch_size
        Side of the square patches (pixels); kernel = stride of the patch
        embedding convolution. Must be a power of two (the decoder upsamples
        by factors of 2).
    width
        Encoder token width.
    depth
        Number of transformer blocks.
    n_heads
        Attention heads per block.
    mlp_ratio
        Hidden width of the block MLP relative to ``width``.
    embed_dim
        Dimension D of the gene vector (projection head output).
    decoder_width
        Channels of the decoder at patch resolution; halved at each
        upsampling stage (at least 8).
    mask_ratio
        Default fraction of in-tissue patches hidden from the encoder.
    pool_queries
        Learned attention-pooling queries used next to the mean when pooling
        tokens into the gene vector (0 = mean only).
    input_norm
        ``'standardize'``: centre and scale each image's value channel to mean
        0 and variance 1 over its tissue pixels (clipped to [-5, 5]) before
        encoding, and reconstruct that standardised image; ``'smooth'``: the
        same after a 3x3 masked box filter; ``'gaussian'``: after a masked
        Gaussian filter of ``smooth_sigma`` pixels; ``'rank'``: the Gaussian
        filter, then each image's tissue pixels replaced by the normal scores
        of their ranks (ties share their mean rank), so every gene's values
        have the same distribution and only their arrangement differs (a
        rank transform: a gene detected in few spots no longer has the
        heavy-tailed values that give its sparsity away); ``None``: use values
        as given.
    smooth_sigma
        Gaussian width in pixels for ``input_norm='gaussian'``.
    recon_loss
        ``'mse'``: mean squared error on the hidden tissue pixels;
        ``'pearson'``: one minus the Pearson correlation between prediction
        and target over each gene's hidden tissue pixels. The correlation is
        blind to the level and spread of the hidden pixels, so the gene vector
        gains nothing from telling the decoder a sparse gene's background
        level (a proxy of how many spots detect it): it has to describe the
        *shape* of the pattern.
    in_chans
        Input channels (2: value + tissue mask).
    patch_stem
        How a patch becomes a token. ``False``: one linear map (a convolution
        with kernel = stride = ``patch_size``), as in ViT/MAE. ``True``: a
        two-layer patch embedding: that convolution into as many channels
        as the patch holds values (``in_chans * patch_size**2``), a GELU,
        then a 1x1 convolution to ``width``. With 8-pixel patches a token
        holds 128 values; a single linear map to a 32-wide token keeps only
        a 32-dimensional projection of them, the stem lets the token keep a
        non-linear summary of the whole patch at the same width (and so at
        the same cost in the transformer blocks).

    Every default that :class:`sigel.SIGEL` also has is read from
    :data:`sigel._defaults.HYPER`; ``patch_size`` (resolved from the data by
    ``SIGEL``), ``pool_queries`` and ``in_chans`` are this module's own.
    """

    def __init__(
        self,
        *,
        patch_size: int = 4,
        width: int = _H["width"],
        depth: int = _H["depth"],
        n_heads: int = _H["n_heads"],
        mlp_ratio: float = _H["mlp_ratio"],
        embed_dim: int = _H["embed_dim"],
        decoder_width: int = _H["decoder_width"],
        mask_ratio: float = _H["mask_ratio"],
        pool_queries: int = 4,
        input_norm: str | None = _H["input_norm"],
        smooth_sigma: float = _H["smooth_sigma"],
        recon_loss: str = _H["recon_loss"],
        in_chans: int = 2,
        patch_stem: bool = _H["patch_stem"],
    ):
        super().__init__()
        if patch_size < 1 or (patch_size & (patch_size - 1)) != 0:
            raise ValueError(f"patch_size must be a power of two; got {patch_size}")
        if width % 4 != 0:
            raise ValueError(f"width must be divisible by 4; got {width}")
        self.patch_size = int(patch_size)
        self.width = int(width)
        self.embed_dim = int(embed_dim)
        self.mask_ratio = float(mask_ratio)
        self.in_chans = int(in_chans)
        if input_norm not in (None, "standardize", "smooth", "gaussian", "rank"):
            raise ValueError(f"input_norm must be None, 'standardize', 'smooth', 'gaussian' or 'rank'; "
                             f"got {input_norm!r}")
        self.input_norm = input_norm
        self.smooth_sigma = float(smooth_sigma)
        if recon_loss not in ("mse", "pearson"):
            raise ValueError(f"recon_loss must be 'mse' or 'pearson'; got {recon_loss!r}")
        self.recon_loss = recon_loss

        # encoder: patch embedding (one linear map, or the two-layer stem), then the blocks
        self.patch_stem = bool(patch_stem)
        stem = in_chans * patch_size * patch_size if self.patch_stem else width
        self.patch_embed = nn.Conv2d(in_chans, stem, kernel_size=patch_size, stride=patch_size)
        self.patch_mix = nn.Sequential(nn.GELU(), nn.Conv2d(stem, width, kernel_size=1)) if self.patch_stem else None
        self.blocks = nn.ModuleList([_Block(width, n_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        # projection head -> gene vector
        # pooling over tissue tokens: the plain mean plus `pool_queries` learned attention
        # queries (each a softmax-weighted mean over the tokens); keys carry positions, so
        # the pooled vector says *where* a gene is expressed, not only how much
        self.pool_queries = int(pool_queries)
        if self.pool_queries > 0:
            self.pool_query = nn.Parameter(torch.zeros(self.pool_queries, width))
            self.pool_key = nn.Linear(width, width)
        self.head = nn.Sequential(nn.Linear(width * (1 + self.pool_queries), width), nn.GELU(),
                                  nn.Linear(width, embed_dim))

        # decoder: tokens -> patch grid -> transposed-conv upsampling to pixels
        dw = int(decoder_width)
        if dw % 4 != 0:
            raise ValueError(f"decoder_width must be divisible by 4; got {decoder_width}")
        self.decoder_width = dw
        self.decoder_embed = nn.Linear(width, dw)
        # the gene vector conditions every decoder position: the reconstruction of hidden
        # patches far from visible ones must come from it, so it has to summarise the image
        self.decoder_cond = nn.Linear(embed_dim, dw)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
        self.decoder_in = nn.Sequential(nn.Conv2d(dw + 1, dw, 3, padding=1), nn.GELU())
        stages = []
        c = dw
        for _ in range(int(math.log2(patch_size)) - 1):
            c_out = max(c // 2, 8)
            stages.append(nn.Sequential(
                nn.ConvTranspose2d(c, c_out, kernel_size=2, stride=2), nn.GELU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.GELU(),
            ))
            c = c_out
        self.decoder_up = nn.Sequential(*stages)
        # last x2 step straight to one channel: a learned 2x2 sub-pixel pattern per
        # half-resolution position (a 3x3 conv at full resolution costs ~7x more on CPU)
        self.decoder_out = nn.ConvTranspose2d(c, 1, kernel_size=2, stride=2) if patch_size > 1 \
            else nn.Conv2d(c, 1, kernel_size=1)

        self._pos_cache: dict = {}
        self._init_weights()

    # ------------------------------------------------------------------ init
    def _init_weights(self):
        for conv in (self.patch_embed,) + ((self.patch_mix[1],) if self.patch_mix is not None else ()):
            w = conv.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)
        if self.pool_queries > 0:
            nn.init.normal_(self.pool_query, std=1.0)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # small residual branches at start (scaled init of each block's output projections):
        # the deep pre-norm encoder then starts close to the identity and trains stably
        for blk in self.blocks:
            blk.attn.proj.weight.data.mul_(0.1)
            blk.mlp[2].weight.data.mul_(0.1)

    def _pos(self, grid, dim, device, dtype):
        key = (grid, dim, str(device), dtype)
        pe = self._pos_cache.get(key)
        if pe is None:
            pe = sincos_pos_embed_2d(grid[0], grid[1], dim, device=device, dtype=dtype)
            self._pos_cache[key] = pe
        return pe

    # ----------------------------------------------------------- input norm
    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image standardisation of the value channel over tissue pixels (see ``input_norm``).

        Removes each gene's in-tissue mean and spread, so the encoder sees the
        *shape* of the pattern: a gene expressed in few spots and one expressed
        everywhere no longer differ by their average level.
        """
        if self.input_norm is None:
            return x
        v, m = x[:, 0].float(), x[:, 1].float()
        if self.input_norm in ("smooth", "gaussian", "rank"):
            # masked (normalised) convolution: the mean of the in-tissue neighbours, background ignored
            v = self.filter2d(v * m) / self.filter2d(m).clamp(min=1e-6) * m
        if self.input_norm == "rank":
            v = _normal_scores(v, m)
        n = m.sum((1, 2)).clamp(min=1.0)
        mean = (v * m).sum((1, 2)) / n
        var = (((v - mean[:, None, None]) * m) ** 2).sum((1, 2)) / n
        z = (v - mean[:, None, None]) / var.clamp(min=1e-8).sqrt()[:, None, None]
        z = z.clamp(-5.0, 5.0) * m
        return torch.stack([z.to(x.dtype), x[:, 1]], dim=1)

    def filter2d(self, v: torch.Tensor) -> torch.Tensor:
        """The input filter applied to ``(..., H, W)`` images, zero outside the image.

        The kernel is separable, so the filter is two banded matrix products
        (``K_H @ v @ K_W``), which run far faster on a CPU than a
        one-channel convolution with a long kernel.
        """
        H, W = v.shape[-2:]
        key = ("band", H, W, str(v.device), v.dtype)
        bands = self._pos_cache.get(key)
        if bands is None:
            k = self._smoothing_kernel(v.device, v.dtype)
            bands = (_band(H, k), _band(W, k))
            self._pos_cache[key] = bands
        return bands[0] @ v @ bands[1]

    @property
    def input_filter(self) -> tuple | None:
        """The masked filter :meth:`normalize_input` applies: ``('box', 1)`` (a 3x3 box, ``'smooth'``),
        ``('gaussian', smooth_sigma)`` (``'gaussian'`` and ``'rank'``) or ``None`` (no filter)."""
        if self.input_norm == "smooth":
            return ("box", 1)
        if self.input_norm in ("gaussian", "rank"):
            return ("gaussian", self.smooth_sigma)
        return None

    def _smoothing_kernel(self, device, dtype) -> torch.Tensor:
        """1-d factor of the separable filter: a 3-tap box (``'smooth'``, a 3x3 box in 2-d) or a
        Gaussian of ``smooth_sigma`` pixels truncated at 3 sigma (``'gaussian'``)."""
        if self.input_norm == "smooth":
            return torch.ones(3, device=device, dtype=dtype)
        return gaussian_taps(self.smooth_sigma, device, dtype)

    # -------------------------------------------------------------- patchify
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``(B, C, H, W)`` on the bottom/right to multiples of ``patch_size``."""
        p = self.patch_size
        H, W = x.shape[-2:]
        ph, pw = (-H) % p, (-W) % p
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x

    def patchify(self, x: torch.Tensor):
        """Patch-embed a batch.

        Parameters
        ----------
        x
            ``(B, 2, H, W)`` value + tissue-mask channels.

        Returns
        -------
        tokens : torch.Tensor
            ``(B, N, width)`` patch tokens with positions added (row-major grid).
        tissue : torch.Tensor
            ``(B, N)`` bool, patch holds at least one tissue pixel.
        grid : tuple
            ``(grid_h, grid_w)``.
        """
        x = self.pad(x)
        p = self.patch_size
        t = self.patch_embed(x)  # (B, C, gh, gw)
        if self.patch_mix is not None:
            t = self.patch_mix(t)
        B, C, gh, gw = t.shape
        t = t.flatten(2).transpose(1, 2)
        t = t + self._pos((gh, gw), C, t.device, t.dtype)[None]
        tissue = F.max_pool2d(x[:, 1:2].float(), kernel_size=p, stride=p).flatten(1) > 0
        return t, tissue, (gh, gw)

    # ---------------------------------------------------------------- masking
    @staticmethod
    def mask_tissue_patches(tissue: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                            grid=None) -> TokenBatch:
        """Choose visible tokens: a random ``1 - mask_ratio`` share of each sample's tissue patches.

        Parameters
        ----------
        tissue
            ``(B, N)`` bool in-tissue patches.
        mask_ratio
            Fraction of in-tissue patches to hide (0 = keep all in-tissue
            patches, the embedding pass). At least one patch stays visible and,
            when ``mask_ratio > 0`` and a sample has >= 2 tissue patches, at
            least one is hidden.
        generator
            Torch generator for the random draw (on the tensor's device).
        grid
            Patch grid, stored on the result.

        Returns
        -------
        TokenBatch
            Visible token ids (in random order), validity and the hidden set.
        """
        B, N = tissue.shape
        dev = tissue.device
        n_tis = tissue.sum(1)
        if mask_ratio <= 0:
            n_keep = n_tis
            # stable order: tissue patches first, in grid order
            key = (~tissue).to(torch.float32) * 2.0 + torch.arange(N, device=dev, dtype=torch.float32)[None] / N
        else:
            n_keep = torch.round(n_tis.to(torch.float32) * (1.0 - mask_ratio)).to(torch.long)
            n_keep = torch.minimum(n_keep, n_tis - 1)
            noise = torch.rand(B, N, device=dev, generator=generator)
            key = noise + (~tissue).to(torch.float32) * 2.0
        n_keep = n_keep.clamp(min=1)
        order = torch.argsort(key, dim=1)
        rank = torch.argsort(order, dim=1)  # position of every patch in the shuffled order
        L = int(n_keep.max())
        ids = order[:, :L]
        valid = torch.arange(L, device=dev)[None, :] < n_keep[:, None]
        masked = tissue & (rank >= n_keep[:, None])
        if bool(valid.all()):
            valid = None
        else:
            ids = torch.where(valid, ids, ids[:, :1])  # pad slots repeat a valid id (ignored via `valid`)
        return TokenBatch(ids, valid, masked, tissue, grid)

    # ---------------------------------------------------------------- encoder
    def encode(self, tokens: torch.Tensor, tb: TokenBatch) -> torch.Tensor:
        """Run the transformer on the gathered tokens.

        Parameters
        ----------
        tokens
            ``(B, N, width)`` output of :meth:`patchify` (``(B, L, width)``, already
            gathered, when ``tb.ids`` is ``None``).
        tb
            Which tokens to encode (:meth:`mask_tissue_patches`).

        Returns
        -------
        torch.Tensor
            ``(B, L, width)`` normalised latent tokens (padding slots hold junk).
        """
        x = tokens if tb.ids is None else torch.gather(tokens, 1, tb.ids[..., None].expand(-1, -1, tokens.shape[-1]))
        attn_mask = None if tb.valid is None else tb.valid[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, attn_mask)
        return self.norm(x)

    def pool(self, latent: torch.Tensor, tb: TokenBatch) -> torch.Tensor:
        """Pool the latent tokens (valid slots only) and project -> ``(B, D)``.

        The pooled feature is the token mean concatenated with ``pool_queries``
        attention-weighted means (learned queries against position-aware keys).
        """
        B, L, C = latent.shape
        if tb.valid is None:
            h = latent.mean(1)
        else:
            w = tb.valid.to(latent.dtype)[..., None]
            h = (latent * w).sum(1) / w.sum(1).clamp(min=1.0)
        if self.pool_queries > 0:
            keys = self.pool_key(latent)  # (B, L, C)
            scores = torch.einsum("mc,blc->bml", self.pool_query.to(keys.dtype), keys) / math.sqrt(C)
            if tb.valid is not None:
                scores = scores.masked_fill(~tb.valid[:, None, :], float("-inf"))
            att = torch.softmax(scores.float(), dim=-1).to(latent.dtype)
            pooled = torch.einsum("bml,blc->bmc", att, latent).reshape(B, -1)
            h = torch.cat([h, pooled], dim=1)
        return self.head(h)

    # ---------------------------------------------------------------- decoder
    def decode(self, latent: torch.Tensor, tb: TokenBatch, out_hw, z: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct full-resolution images from the visible latent tokens.

        Parameters
        ----------
        latent
            ``(B, L, width)`` from :meth:`encode`.
        tb
            The token bookkeeping used to encode.
        out_hw
            ``(H, W)`` of the input (the output is cropped to it).
        z
            Optional ``(B, D)`` gene vector (pooled over the visible tokens),
            added to every grid position.

        Returns
        -------
        torch.Tensor
            ``(B, H, W)`` predicted value channel.
        """
        B, L, _ = latent.shape
        gh, gw = tb.grid
        N = gh * gw
        y = self.decoder_embed(latent)
        dw = y.shape[-1]
        ids = tb.ids if tb.valid is None else torch.where(tb.valid, tb.ids, torch.full_like(tb.ids, N))
        full = self.mask_token.to(y.dtype).expand(B, N + 1, dw).clone()
        full = full.scatter(1, ids[..., None].expand(-1, -1, dw), y)[:, :N]
        full = full + self._pos((gh, gw), dw, y.device, y.dtype)[None]
        if z is not None:
            full = full + self.decoder_cond(z).to(full.dtype)[:, None, :]
        grid = full.transpose(1, 2).reshape(B, dw, gh, gw)
        tis = tb.tissue.to(grid.dtype).reshape(B, 1, gh, gw)
        g = self.decoder_in(torch.cat([grid, tis], dim=1))
        g = self.decoder_up(g)
        out = self.decoder_out(g)[:, 0]
        return out[:, : out_hw[0], : out_hw[1]]

    # ------------------------------------------------------------------- loss
    def loss(self, x: torch.Tensor, pred: torch.Tensor, tb: TokenBatch, reduction: str = "mean") -> torch.Tensor:
        """Reconstruction error on hidden, in-tissue pixels (see ``recon_loss``).

        Each sample's error is averaged over its own hidden tissue pixels, so
        every gene weighs the same regardless of tissue size.

        Parameters
        ----------
        x
            ``(B, 2, H, W)`` input.
        pred
            ``(B, H, W)`` from :meth:`decode`.
        tb
            Token bookkeeping (the hidden set ``tb.masked``).
        reduction
            ``'mean'`` (scalar) or ``'none'`` (``(B,)``).
        """
        p = self.patch_size
        gh, gw = tb.grid
        H, W = x.shape[-2:]
        hid = tb.masked.reshape(-1, gh, gw).repeat_interleave(p, 1).repeat_interleave(p, 2)[:, :H, :W]
        m = (hid.to(pred.dtype) * x[:, 1].to(pred.dtype)).float().flatten(1)
        p_, t_ = pred.float().flatten(1), x[:, 0].float().flatten(1)
        n = m.sum(1).clamp(min=1.0)
        if self.recon_loss == "pearson":
            pc = (p_ - (p_ * m).sum(1, keepdim=True) / n[:, None]) * m
            tc = (t_ - (t_ * m).sum(1, keepdim=True) / n[:, None]) * m
            den = ((pc ** 2).sum(1) * (tc ** 2).sum(1)).clamp(min=1e-12).sqrt()
            per = 1.0 - (pc * tc).sum(1) / den
        else:
            per = ((p_ - t_) ** 2 * m).sum(1) / n
        return per.mean() if reduction == "mean" else per

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None,
                target: torch.Tensor | None = None):
        """One masked-autoencoding pass.

        Parameters
        ----------
        x
            ``(B, 2, H, W)`` value + mask channels.
        target
            Optional ``(B, 2, H, W)`` image to reconstruct instead of ``x``
            (normalised the same way): a denoising pass reconstructs the
            full-depth image from a thinned copy ``x``.
        mask_ratio
            Fraction of in-tissue patches hidden (default: the model's).
        generator
            Torch generator for the masking draw.

        Returns
        -------
        dict
            ``loss`` (scalar reconstruction loss; the target is the
            normalised input, see ``input_norm``), ``loss_per_gene``
            (``(B,)``, whose mean is ``loss``), ``pred`` (``(B, H, W)``),
            ``z`` (``(B, D)`` gene vector pooled over the *visible* tokens, a
            masked view used by the refinement losses), ``tokens``
            (:class:`TokenBatch`).
        """
        ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        x = self.normalize_input(x)
        y = x if target is None else self.normalize_input(target)
        tokens, tissue, grid = self.patchify(x)
        tb = self.mask_tissue_patches(tissue, ratio, generator, grid)
        latent = self.encode(tokens, tb)
        z = self.pool(latent, tb)
        pred = self.decode(latent, tb, x.shape[-2:], z)
        per = self.loss(y, pred, tb, reduction="none")
        return {"loss": per.mean(), "loss_per_gene": per, "pred": pred, "z": z, "tokens": tb}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Gene vectors: encoder on all in-tissue tokens, mean-pooled, projected.

        Never runs the decoder.

        Parameters
        ----------
        x
            ``(B, 2, H, W)`` value + mask channels.

        Returns
        -------
        torch.Tensor
            ``(B, D)``.
        """
        x = self.normalize_input(x)
        tokens, tissue, grid = self.patchify(x)
        tb = self.mask_tissue_patches(tissue, 0.0, None, grid)
        return self.pool(self.encode(tokens, tb), tb)
