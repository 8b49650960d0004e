"""Inference straight from sparse images: encoder tokens without dense images.

The embedding pass (every epoch of a fit, ``SIGEL.transform``) runs the
encoder on all in-tissue patches of every gene. The generic route densifies
each batch to ``(B, 2, H, W)``, standardises it, pads it, convolves both
channels and gathers the tissue tokens. All images of one `GeneImages` share
one tissue mask, so most of that is the same for every gene. Here:

* the value channel is scattered from the sparse rows straight into the
  token layout ``(B, L, p * p)`` (``L`` in-tissue patches in grid order,
  pixels of a patch row-major), already standardised (per-gene mean and
  spread over the tissue pixels from the sparse values, in float64);
* the patch embedding is one matrix product with the value half of the
  convolution kernel; the mask half, the bias and the positions are the same
  for every gene and added once per token (``(L, width)``);
* the model's own ``encode`` and ``pool`` finish the job.

With a smoothing input norm (``'gaussian'``, ``'smooth'``) the batch is
scattered to pixels instead, filtered there (the separable masked filter of
`MaskedAutoencoder.normalize_input`, whose denominator -- the filtered tissue
mask -- is the same for every gene and computed once), standardised, and
gathered into the token layout.

The result equals ``model.embed(images.to_tensor(idx))`` up to float32
rounding (summation order; tested to ~1e-5). Models this route does not
cover (``input_norm='rank'``, other input channels) use the generic one.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

__all__ = ["TokenLayout", "token_layout", "embed_rows"]


class TokenLayout:
    """Where every pixel of an image grid goes in the encoder's token layout.

    Attributes
    ----------
    patch
        Patch side ``p``.
    grid
        Patch grid ``(gh, gw)`` of the padded image.
    token_ids
        ``(L,)`` in-tissue patch indices (row-major on the grid), the token order.
    slot
        ``(H * W,)`` int64: slot ``token * p * p + (r % p) * p + c % p`` of each
        image pixel, ``-1`` when its patch is not in tissue.
    slot_mask
        ``(L * p * p,)`` float32 tissue mask in slot order (padding pixels 0).
    n_tissue
        Number of tissue pixels (the standardisation denominator).
    """

    __slots__ = ("patch", "grid", "token_ids", "slot", "slot_mask", "n_tissue", "in_tissue", "mask_patches",
                 "shape", "pixel_of_slot")

    def __init__(self, mask: np.ndarray, patch: int):
        mask = np.asarray(mask, dtype=bool)
        H, W = mask.shape
        p = int(patch)
        gh, gw = -(-H // p), -(-W // p)
        padded = np.zeros((gh * p, gw * p), dtype=bool)
        padded[:H, :W] = mask
        blocks = padded.reshape(gh, p, gw, p).transpose(0, 2, 1, 3)  # (gh, gw, p, p)
        tissue = blocks.any(axis=(2, 3)).ravel()
        token_ids = np.flatnonzero(tissue)
        tok_of_patch = np.full(gh * gw, -1, dtype=np.int64)
        tok_of_patch[token_ids] = np.arange(len(token_ids))
        r, c = np.divmod(np.arange(H * W, dtype=np.int64), W)
        tok = tok_of_patch[(r // p) * gw + c // p]
        self.slot = np.where(tok >= 0, tok * p * p + (r % p) * p + c % p, -1)
        self.mask_patches = blocks.reshape(gh * gw, p * p)[token_ids].astype(np.float32)  # (L, p*p)
        self.slot_mask = self.mask_patches.ravel()
        self.in_tissue = mask.ravel()
        self.patch, self.grid, self.token_ids = p, (gh, gw), token_ids
        self.n_tissue = int(mask.sum())
        self.shape = (H, W)
        # the image pixel in every token slot (padding pixels of a tissue patch: -1)
        self.pixel_of_slot = np.full(len(token_ids) * p * p, -1, dtype=np.int64)
        has = self.slot >= 0
        self.pixel_of_slot[self.slot[has]] = np.flatnonzero(has)


def token_layout(model, images) -> TokenLayout | None:
    """The layout for ``model`` on ``images``, or ``None`` when this route does not apply."""
    if getattr(model, "input_norm", "?") not in (None, "standardize", "gaussian", "smooth") \
            or getattr(model, "in_chans", None) != 2:
        return None
    pe = getattr(model, "patch_embed", None)
    if not isinstance(pe, torch.nn.Conv2d) or pe.kernel_size != pe.stride or pe.padding != (0, 0) \
            or pe.kernel_size[0] != pe.kernel_size[1] or pe.kernel_size[0] != getattr(model, "patch_size", None):
        return None
    if not hasattr(images, "values") or not hasattr(images, "mask") or images.values.format != "csr":
        return None
    return TokenLayout(images.mask, model.patch_size)


def _rows(values, idx: np.ndarray):
    """indptr, indices, data of the CSR rows ``idx`` (no copy for a contiguous range)."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
        s, e = int(idx[0]), int(idx[-1]) + 1
        a, b = values.indptr[s], values.indptr[e]
        return values.indptr[s:e + 1] - a, values.indices[a:b], values.data[a:b]
    sub = values[idx]
    return sub.indptr, sub.indices, sub.data


def _image_rows(images, idx: np.ndarray):
    """indptr, indices, data of the image rows ``idx``: the stored values, or a fresh draw
    (:class:`sigel.data.views.RarefiedImages`) for depth-matched images."""
    if getattr(images, "draws", False):
        d = sp.csr_matrix(images.dense(idx).reshape(len(idx), -1))
        return d.indptr, d.indices, d.data
    return _rows(images.values, idx)


def _dense_rows(images, idx: np.ndarray) -> np.ndarray:
    """``(B, H * W)`` float32 values of the image rows ``idx`` (a fresh draw for depth-matched images)."""
    B = len(idx)
    if getattr(images, "draws", False):
        return images.dense(idx).reshape(B, -1)
    indptr, indices, data = _rows(images.values, idx)
    dense = np.zeros((B, images.height * images.width), dtype=np.float32)
    dense[np.repeat(np.arange(B), np.diff(indptr)), indices] = data
    return dense


def patch_values(images, idx: np.ndarray, layout: TokenLayout, standardize: bool) -> np.ndarray:
    """Value channel of genes ``idx`` in token layout ``(B, L, p * p)`` float32.

    With ``standardize`` each gene is centred and scaled over its tissue
    pixels and clipped to [-5, 5], zero outside the tissue (the model's
    ``input_norm='standardize'``); otherwise the values as stored.
    """
    B = len(idx)
    L = len(layout.token_ids)
    pp = layout.patch * layout.patch
    indptr, indices, data = _image_rows(images, idx)
    nnz = np.diff(indptr)
    row = np.repeat(np.arange(B), nnz)
    slot = layout.slot[indices]
    if standardize:
        keep = layout.in_tissue[indices]
        v = data[keep].astype(np.float64)
        r, slot = row[keep], slot[keep]
        n = max(layout.n_tissue, 1)
        s1 = np.bincount(r, weights=v, minlength=B)
        s2 = np.bincount(r, weights=v * v, minlength=B)
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        sd = np.sqrt(np.maximum(var, 1e-8))
        out = np.empty((B, L * pp), dtype=np.float32)  # every slot written: the standardised zero, or a value below
        np.multiply.outer(np.clip(-mean / sd, -5.0, 5.0).astype(np.float32), layout.slot_mask,
                          out=out)
        vals = np.clip((v - mean[r]) / sd[r], -5.0, 5.0).astype(np.float32)
    else:
        keep = slot >= 0
        r, slot, vals = row[keep], slot[keep], data[keep].astype(np.float32)
        out = np.zeros((B, L * pp), dtype=np.float32)
    out.reshape(-1)[r * (L * pp) + slot] = vals
    return out.reshape(B, L, pp)


class _Smoother:
    """The masked, separable input filter of a model on one tissue mask, for batches of sparse rows."""

    def __init__(self, model, layout: TokenLayout, device):
        H, W = layout.shape
        self.model = model
        self.mask = torch.from_numpy(layout.in_tissue.reshape(H, W).astype(np.float32)).to(device)
        den = self._filter(self.mask[None])[0]
        self.inv_den = torch.where(self.mask > 0, 1.0 / den.clamp(min=1e-6), torch.zeros_like(den))
        self.in_tissue = torch.from_numpy(layout.in_tissue).to(device)
        self.n = float(max(layout.n_tissue, 1))
        pos = layout.pixel_of_slot
        self.gather = torch.from_numpy(np.where(pos >= 0, pos, 0)).to(device)
        # token slots that hold a tissue pixel (padding pixels of a tissue patch stay 0)
        self.slot_tissue = torch.from_numpy((pos >= 0) & layout.in_tissue[np.where(pos >= 0, pos, 0)]).to(
            device=device, dtype=torch.float32)
        self.shape, self.device = (H, W), device
        self.token_shape = (len(layout.token_ids), layout.patch * layout.patch)  # (L, p * p)

    def _filter(self, v: torch.Tensor) -> torch.Tensor:
        return self.model.filter2d(v)

    def tokens(self, images, idx: np.ndarray) -> torch.Tensor:
        """Filtered, standardised (clipped to [-5, 5]) values of genes ``idx`` in token layout ``(B, L, p * p)``.

        Image values live on tissue pixels only, so the filtered image needs no
        masking before the filter; the standardisation statistics are taken
        over the tissue pixels, then only the token slots are standardised.
        """
        H, W = self.shape
        B = len(idx)
        dense = _dense_rows(images, idx)
        v = self._filter(torch.from_numpy(dense).reshape(B, H, W).to(self.device)) * self.inv_den
        v = v.reshape(B, H * W)
        mean = v.sum(1, keepdim=True) / self.n                     # v is 0 outside the tissue
        var = (((v - mean) * self.in_tissue) ** 2).sum(1, keepdim=True) / self.n
        t = torch.index_select(v, 1, self.gather)
        z = ((t - mean) / var.clamp(min=1e-8).sqrt()).clamp(-5.0, 5.0) * self.slot_tissue
        return z.reshape(B, *self.token_shape)


def embed_rows(model, images, rows: np.ndarray, *, batch_size: int, device, out: torch.Tensor,
               layout: TokenLayout, own=None) -> None:
    """Embed image rows ``rows`` into ``out`` (call under ``torch.inference_mode``).

    ``own``, a boolean per batch of ``batch_size`` rows, leaves the batches
    marked ``False`` out (their rows of ``out`` are not written; depth-matched
    images draw them and discard them, :func:`sigel.data.views.skip_draws`).
    """
    from ..data.views import skip_draws
    from ..model.mae import TokenBatch

    p = layout.patch
    w = model.patch_embed.weight  # (C, 2, p, p): C = width, or the stem's channels
    C = w.shape[0]
    width = int(model.width)
    w_val = w[:, 0].reshape(C, p * p)
    mask_pat = torch.from_numpy(layout.mask_patches).to(device=device, dtype=w.dtype)  # (L, p*p)
    ids = torch.as_tensor(layout.token_ids, device=device)
    const = mask_pat @ w[:, 1].reshape(C, p * p).t()
    if model.patch_embed.bias is not None:
        const = const + model.patch_embed.bias
    pos = model._pos(layout.grid, width, device, w.dtype)[ids]
    mix = getattr(model, "patch_mix", None)
    if mix is None:
        const = const + pos
    else:  # the stem: GELU and a 1x1 convolution (a linear map per token), then the positions
        w_mix = mix[1].weight.reshape(width, C)
        b_mix = mix[1].bias
    N = layout.grid[0] * layout.grid[1]
    tissue = torch.zeros(N, dtype=torch.bool, device=device)
    tissue[ids] = True
    standardize = model.input_norm == "standardize"
    smoother = _Smoother(model, layout, device) if model.input_norm in ("gaussian", "smooth") else None
    for j, s in enumerate(range(0, len(rows), batch_size)):
        idx = rows[s:s + batch_size]
        if own is not None and not own[j]:
            skip_draws(images, idx)
            continue
        B = len(idx)
        if smoother is not None:
            v = smoother.tokens(images, idx).to(w.dtype)
        else:
            v = torch.from_numpy(patch_values(images, idx, layout, standardize)).to(device)
        t = F.linear(v, w_val)
        tokens = t + const.to(t.dtype)
        if mix is not None:
            tokens = F.linear(mix[0](tokens), w_mix, b_mix) + pos.to(t.dtype)
        # tokens are already the tissue patches in grid order: nothing to gather (ids=None)
        tb = TokenBatch(None, None,
                        torch.zeros(B, N, dtype=torch.bool, device=device), tissue.expand(B, N), layout.grid)
        out[s:s + B] = model.pool(model.encode(tokens, tb), tb).float()

