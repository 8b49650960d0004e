"""The training loop: Module I pre-training, then Module II + III every epoch.

Plain PyTorch. One refinement epoch is four separate steps, each its own
function so that a data-parallel (``torch.distributed``) version can replace
one at a time:

1. :func:`embed_all` - embed every gene without gradients (shardable by
   gene; gather the ``(G, D)`` result).
2. :func:`fit_mixture` - a few warm-started MAP-EM iterations on the
   embeddings (small: ``O(G K D)``; run on every rank or all-reduce the
   sufficient statistics).
3. :func:`refine.select_confident <sigel.model.refine.select_confident>` -
   self-paced choice of trusted pseudo-labels.
4. :func:`gradient_steps` - AdamW steps over a :func:`gene_batches`
   iterator (shard the batch list per rank and wrap the model in DDP).

A pre-training phase (reconstruction only, plus the decaying scaffold term)
precedes refinement. Training stops when the fraction of genes changing hard
context between epochs is below ``tol`` (once the self-paced ramp is over)
or at the epoch limit.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .._defaults import HYPER as _D
from .._settings import logger, settings
from ..data.batches import gene_batches
from ..data.views import skip_draws
from ..model.refine import (
    RefineState,
    label_change,
    refinement_losses,
    schedule,
    select_confident,
    thin_images,
)
from ..model.scaffold import image_knn_graph
from .inference import embed_rows, token_layout

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "embed_all",
    "fit_mixture",
    "gene_batches",
    "gradient_steps",
    "make_optimizer",
    "lr_at",
]


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Training hyper-parameters (see :class:`sigel.SIGEL` for their meaning).

    The defaults of the fields :class:`sigel.SIGEL` also takes are its own
    (read from :data:`sigel._defaults.HYPER`); ``min_lr`` left at ``None``
    becomes 1/20 of ``lr``, the schedule ``SIGEL`` trains with. ``epochs``
    and ``pretrain_epochs``, which ``SIGEL`` resolves from the number of
    genes, default to 40 and 10 here.

    Attributes
    ----------
    epochs
        Maximum number of epochs in total (pre-training included).
    pretrain_epochs
        Epochs of reconstruction-only training before refinement.
    batch_size, embed_batch_size
        Genes per gradient step / per inference batch.
    lr, min_lr, weight_decay, warmup_epochs, grad_clip
        AdamW with linear warm-up then half-cycle cosine decay to ``min_lr``
        (set per step); gradient-norm clipping (``None`` = off).
    mask_ratio
        Fraction of in-tissue patches hidden per gene and step.
    refine_view
        Which embedding the refinement and scaffold terms act on: ``'full'``
        (an extra encoder pass on all tissue tokens, the same view used to
        embed and cluster) or ``'masked'`` (the vector pooled over the visible
        tokens of the reconstruction pass; cheaper, noisier).
    thinning
        Largest per-gene pixel drop rate of the augmented view the
        refinement and scaffold terms see (0 = no augmentation).
    scaffold_self_weight
        Weight of a gene itself among its scaffold positives.
    refine
        Run Modules II + III (``False``: autoencoder only; the mixture is fitted
        once at the end).
    scaffold, scaffold_k, scaffold_weight, scaffold_epochs
        Image kNN scaffold: on/off, neighbours per gene, initial weight, and
        the epoch by which the weight has decayed linearly to 0 (``None``:
        the last epoch).
    scaffold_graph
        How the scaffold's neighbours are found (:func:`scaffold_graph_options`):
        ``'box'``, correlation of 3x3-box-smoothed images; ``'pca'``, cosine
        on the 50 leading principal axes of the images after the encoder's
        input filter.
    contrastive_weight, mixture_weight, temperature
        Weights of the pseudo-contrastive and mixture-likelihood terms; the
        contrastive softmax temperature.
    select_start, select_end, select_epochs
        Self-paced kept fraction per context: grows linearly from
        ``select_start`` to ``select_end`` over ``select_epochs`` refinement
        epochs (``None``: half of them).
    em_iters, init_em_iters, final_em_iters
        MAP-EM iterations per epoch (warm start), at the first refinement
        epoch (per restart) and for the final fit.
    mixture_n_init
        k-means++ restarts when the mixture is initialised.
    tol
        Label-change tolerance for stopping.
    amp
        bf16 autocast on CUDA (ignored on CPU).
    invariance_weight, view_temperature, thin_min
        Weight and temperature of the sampling-noise invariance term
        (:func:`~sigel.model.refine.view_invariance_loss`, every epoch), and
        the smallest keep probability of the binomial count thinning that
        makes its two views (each view keeps every count with a probability
        drawn uniformly from ``[thin_min, 1]``).
    denoise
        Module I's reconstruction target. ``False``: the image itself.
        ``True``: each gene's full-depth image, reconstructed from a count
        view (a binomially thinned copy of its counts), so the vector must
        carry what survives a shallower measurement. ``'split'``
        (noise2noise): the counts are split at random into two disjoint
        halves (share from ``[thin_min, 1 - thin_min]``) and the image of one
        is reconstructed from the image of the other; the two have
        independent sampling noise, so only the expression pattern can be
        predicted and the input's speckle is of no use to the vector.
    rarefy_draws
        With depth-matched images (:class:`sigel.data.views.RarefiedImages`):
        how many rarefied draws the final vectors average over.
    ema_decay
        Decay of the running average of the weights (:class:`WeightAverage`)
        that computes every epoch's vectors and becomes the trained model;
        ``0``: no average, the live weights throughout.
    """

    epochs: int = 40
    pretrain_epochs: int = 10
    batch_size: int = _D["batch_size"]
    embed_batch_size: int = _D["embed_batch_size"]
    lr: float = _D["lr"]
    min_lr: float | None = None
    weight_decay: float = _D["weight_decay"]
    warmup_epochs: int = _D["warmup_epochs"]
    grad_clip: float | None = 1.0
    mask_ratio: float = _D["mask_ratio"]
    refine_view: str = "full"
    thinning: float = 0.7
    scaffold_self_weight: float = 1.0
    refine: bool = _D["refine"]
    scaffold: bool = _D["scaffold"]
    scaffold_k: int = _D["scaffold_k"]
    scaffold_weight: float = _D["scaffold_weight"]
    scaffold_epochs: int | None = None
    scaffold_graph: str = _D["scaffold_graph"]
    contrastive_weight: float = _D["contrastive_weight"]
    mixture_weight: float = _D["mixture_weight"]
    temperature: float = _D["temperature"]
    select_start: float = _D["select_start"]
    select_end: float = _D["select_end"]
    select_epochs: int | None = None
    em_iters: int = _D["em_iters"]
    init_em_iters: int = 30
    final_em_iters: int = 50
    mixture_n_init: int = 10
    tol: float = _D["tol"]
    amp: bool = _D["amp"]
    invariance_weight: float = _D["invariance_weight"]
    view_temperature: float = _D["view_temperature"]
    spread_weight: float = _D["spread_weight"]
    thin_min: float = _D["thin_min"]
    denoise: bool | str = _D["denoise"]
    rarefy_draws: int = _D["rarefy_draws"]
    ema_decay: float = _D["ema_decay"]

    def __post_init__(self):
        if self.min_lr is None:
            self.min_lr = self.lr / 20.0

    @property
    def refine_epochs(self) -> int:
        """Epochs available for refinement."""
        return max(self.epochs - self.pretrain_epochs, 0) if self.refine else 0

    @property
    def ramp_epochs(self) -> int:
        """Length of the self-paced ramp (refinement epochs)."""
        if self.select_epochs is not None:
            return int(self.select_epochs)
        return max(self.refine_epochs // 2, 1)

    @property
    def ramp_end(self) -> int:
        """0-based epoch at which the self-paced fraction reaches ``select_end``."""
        return self.pretrain_epochs + self.ramp_epochs

    @property
    def scaffold_end(self) -> int:
        """0-based epoch at which the scaffold weight reaches 0."""
        if self.scaffold_epochs is not None:
            return int(self.scaffold_epochs)
        return self.epochs if self.refine else 0


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    embeddings
        ``(G, D)`` float32 array, final gene vectors (image row order).
    memberships
        ``(G, K)`` float array, final soft memberships.
    history
        One dict per epoch (loss terms, label change, n selected, seconds ...).
    stop_reason
        ``'converged'`` or ``'max_epochs'``.
    epochs_run
        Number of epochs run.
    graph
        The scaffold :class:`~sigel.model.scaffold.GeneGraph` (or ``None``).
    seconds
        Total wall time.
    """

    embeddings: np.ndarray
    memberships: np.ndarray
    history: list = field(default_factory=list)
    stop_reason: str = "max_epochs"
    epochs_run: int = 0
    graph: object | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------- small helpers
def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases, norms, positional/mask tokens (1-D or token params).

    Parameters
    ----------
    model
        The network.
    lr
        Initial learning rate (the schedule overrides it per step).
    weight_decay
        Decoupled weight decay for matrices and kernels.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("mask_token") else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate at ``step``: linear warm-up, then half-cycle cosine to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    t = min(max(t, 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def scaffold_graph_options(graph: str, model) -> dict:
    """Keyword arguments of :func:`~sigel.model.scaffold.image_knn_graph` for the scaffold ``graph``.

    ``'box'``: Pearson correlation of the images after a 3x3 masked box
    filter, on all (pooled) tissue pixels. ``'pca'``: the images after the
    encoder's own input filter (``model.input_filter``), centred and scaled
    per gene, compared by cosine on their 50 leading principal axes; the
    truncation drops the pixel noise that no other gene shares, and the
    scaffold sees the images at the scale the encoder sees them.
    """
    if graph == "box":
        return {"smooth": "box", "smooth_radius": 1}
    if graph != "pca":
        raise ValueError(f"scaffold_graph must be 'box' or 'pca'; got {graph!r}")
    kind, size = model.input_filter or ("box", 0)
    if kind == "gaussian":
        return {"smooth": "gaussian", "sigma": float(size), "n_components": 50}
    return {"smooth": "box", "smooth_radius": int(size), "n_components": 50}


def _owned_batches(n: int, batch_size: int, shard) -> np.ndarray | None:
    """Which of the ``ceil(n / batch_size)`` batches a data-parallel rank embeds (``None``: all)."""
    if shard is None:
        return None
    rank, world = (int(v) for v in shard)
    return np.arange(-(-n // batch_size)) % world == rank


@torch.no_grad()
def embed_all(model, images, *, batch_size: int = 256, device=None, amp: bool = False,
              rows: np.ndarray | None = None, shard: tuple[int, int] | None = None):
    """Embed every gene (or ``rows``) without gradients.

    Parameters
    ----------
    model
        :class:`sigel.model.mae.MaskedAutoencoder`.
    images
        :class:`sigel.GeneImages`.
    batch_size
        Genes per forward pass.
    device
        Torch device (default: the model's).
    amp
        bf16 autocast on CUDA.
    rows
        Optional subset of image rows.
    shard
        ``(rank, world)`` of a data-parallel process: embed only the batches
        ``j`` (of ``batch_size`` rows, in order) with ``j % world == rank``.
        Depth-matched images draw the other batches and discard them
        (:func:`sigel.data.views.skip_draws`), so every batch is embedded from
        the draw a single process would read.

    Returns
    -------
    torch.Tensor or (torch.Tensor, numpy.ndarray)
        ``(n, D)`` float32 on ``device``. With ``shard``, also the ``(n,)``
        boolean mask of the rows this process embedded (the others are 0).
    """
    Z, own = _embed_owned(model, images, batch_size=batch_size, device=device, amp=amp, rows=rows, shard=shard)
    return Z if shard is None else (Z, own)


@torch.no_grad()
def _embed_owned(model, images, *, batch_size: int = 256, device=None, amp: bool = False,
                 rows: np.ndarray | None = None, shard: tuple[int, int] | None = None):
    """:func:`embed_all`'s work: the ``(n, D)`` vectors and the ``(n,)`` mask of the rows embedded here
    (all rows without ``shard``)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = images.n_genes if rows is None else len(rows)
    own = _owned_batches(n, batch_size, shard)
    out = (torch.empty if own is None else torch.zeros)(n, model.embed_dim, device=device, dtype=torch.float32)
    layout = token_layout(model, images)
    try:
        with torch.inference_mode(), _autocast(device, amp):
            if layout is not None:  # tokens straight from the sparse rows (same result, faster)
                all_rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
                embed_rows(model, images, all_rows, batch_size=batch_size, device=device, out=out, layout=layout,
                           own=own)
            else:
                for j, s in enumerate(range(0, n, batch_size)):
                    idx = np.arange(s, min(s + batch_size, n)) if rows is None else rows[s:s + batch_size]
                    if own is not None and not own[j]:
                        skip_draws(images, idx)
                        continue
                    x = images.to_tensor(idx, device=device)
                    out[s:s + len(idx)] = model.embed(x).float()
    finally:
        model.train(was_training)
    out = out.clone()  # a normal tensor (inference tensors cannot enter autograd)
    return out, (np.ones(n, dtype=bool) if own is None else np.repeat(own, batch_size)[:n])


def embed_draws(model, images, n_draws, *, rows: np.ndarray | None = None,
                shard: tuple[int, int] | None = None, **kwargs):
    """:func:`embed_all`, averaged over ``n_draws`` depth-matched draws when ``images`` make them.

    For :class:`sigel.data.views.RarefiedImages` the draws are seeded
    ``0 .. n_draws - 1`` (the same draws for the same genes in the same order,
    whatever was read before); other images are embedded once. Genes whose
    total is at most the common depth are the same image in every draw: they
    are embedded once, from the stored images (the sparse token route), and
    only the deeper genes are drawn ``n_draws`` times. ``n_draws`` is one
    number for every gene or a ``(n_rows,)`` array of counts per gene (e.g.
    :meth:`~sigel.data.views.RarefiedImages.draws_by_depth`): draw ``r`` then
    reads only the genes that take more than ``r`` draws. ``shard`` shares the
    batches of each of these passes between data-parallel processes, and the
    return value is then :func:`embed_all`'s pair.
    """
    if not getattr(images, "draws", False):
        return embed_all(model, images, rows=rows, shard=shard, **kwargs)
    if shard is not None and np.ndim(n_draws) > 0:
        raise ValueError("draw counts per gene are for one process (shards need one count for all genes)")
    rows = np.arange(images.n_genes) if rows is None else np.asarray(rows, dtype=np.int64)
    whole = images.read_whole[rows]
    deep = ~whole
    kw = dict(kwargs, shard=shard)
    Z, own_whole = _embed_owned(model, images.whole_images, rows=rows[whole], **kw)
    out = Z.new_zeros(len(rows), Z.shape[1])
    own = np.zeros(len(rows), dtype=bool)
    out[torch.from_numpy(whole).to(out.device)] = Z
    own[whole] = own_whole
    if deep.any():
        n = np.maximum(np.broadcast_to(np.asarray(n_draws, dtype=np.int64), rows.shape)[deep], 1)
        deep_rows = rows[deep]
        acc = out.new_zeros(len(deep_rows), out.shape[1])
        own_deep = np.zeros(len(deep_rows), dtype=bool)
        for r in range(int(n.max())):  # a sequential sum: the same result however the genes are batched
            images.reseed(r)
            now = n > r
            z, own_r = _embed_owned(model, images, rows=deep_rows[now], **kw)
            acc[torch.from_numpy(now).to(acc.device)] += z
            own_deep[now] |= own_r
        out[torch.from_numpy(deep).to(out.device)] = acc / torch.from_numpy(n).to(acc)[:, None]
        own[deep] = own_deep
    return out if shard is None else (out, own)


def fit_mixture(mixture, Z: torch.Tensor, n_iter: int, *, init: bool = False, n_init: int = 10,
                seed: int = 0) -> torch.Tensor:
    """A few MAP-EM iterations on the embeddings; returns the memberships.

    Parameters
    ----------
    mixture
        :class:`sigel.model.mixture.StudentTMixture`.
    Z
        ``(G, D)`` embeddings.
    n_iter
        EM iterations.
    init
        Initialise instead of warm-starting: ``n_init`` k-means++ restarts,
        each followed by ``n_iter`` EM iterations; the restart with the
        highest log posterior is kept (a single k-means++ draw often merges
        two contexts and splits another, and self-paced training would then
        reinforce that mistake).
    n_init
        Number of restarts when ``init``.
    seed
        Seeds the restarts.

    Returns
    -------
    torch.Tensor
        ``(G, K)`` memberships under the updated parameters.
    """
    if not init:
        mixture.fit(Z, n_iter=n_iter, warm_start=True)
        return mixture.resp_
    best = None
    for r in range(max(int(n_init), 1)):
        gen = torch.Generator().manual_seed(int(seed) * 1009 + r)
        mixture.init_kmeanspp(Z, generator=gen)
        mixture.fit(Z, n_iter=n_iter, warm_start=True)
        score = float(mixture.log_posterior(Z))
        if best is None or score > best[0]:
            best = (score, mixture.params, mixture.resp_, list(mixture.history_))
    mixture.params, mixture.resp_, mixture.history_ = best[1], best[2], best[3]
    return mixture.resp_


def uses_full_view(cfg: TrainConfig, weights: dict) -> bool:
    """True when the refinement terms take their gene vector from a full (unmasked, thinned) view.

    With ``cfg.refine_view == 'full'`` and any of the contrastive, mixture or
    scaffold terms switched on, the refinement losses see the encoder run on
    all tissue tokens of a thinned copy of each image (the same view used at
    embedding time); otherwise they use the masked view of the reconstruction
    pass.
    """
    if weights.get("invariance", 0.0) > 0 or weights.get("spread", 0.0) > 0:
        return True
    return cfg.refine_view == "full" and any(weights.get(k, 0.0) > 0 for k in ("contrastive", "mixture", "scaffold"))


def draw_views(cfg: TrainConfig, generator: torch.Generator | None, *, views=None, idx=None, n: int = 1,
               device=None, dtype=torch.float32) -> list:
    """``n`` independent full views of a batch (see :func:`training_views`); ``[]`` without count views.

    Count views (binomial thinning of the genes' counts, keep probability per
    gene from ``[cfg.thin_min, 1]``) are drawn here, before the masking draw of
    the reconstruction pass, so that a data-parallel step can draw them for
    the whole batch in the same order as one process and keep its own rows.
    """
    if views is None or idx is None:
        return []
    split = cfg.denoise == "split"
    out = []
    for _ in range(n - 2 if split else n):
        keep = cfg.thin_min + (1.0 - cfg.thin_min) * torch.rand(len(idx), device=device, generator=generator)
        out.append(views.batch(idx, keep, generator=generator, device=device).to(dtype))
    if split:
        lo = min(cfg.thin_min, 0.5)
        keep = lo + (1.0 - 2.0 * lo) * torch.rand(len(idx), device=device, generator=generator)
        out.extend(v.to(dtype) for v in views.split(idx, keep, generator=generator, device=device))
    return out


def n_views(cfg: TrainConfig, full_view: bool, second: bool) -> int:
    """How many count views one training step draws (:func:`draw_views`): the refinement's full
    view(s), then the denoising input (and, for ``denoise='split'``, its target)."""
    return (2 if second else 1) * bool(full_view) + (2 if cfg.denoise == "split" else bool(cfg.denoise))


def training_views(model, x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None, full_view: bool,
                   *, views=None, idx=None, second: bool = False, drawn: list | None = None):
    """The forward passes of one training step.

    Returns ``(out, z, z2)``: ``out`` is the masked-autoencoder output (its
    ``'loss'``, ``'pred'`` and ``'tokens'``), ``z`` the ``(B, D)`` gene vectors
    the refinement losses act on (see :func:`uses_full_view`), ``z2`` the
    vectors of a second, independent view when ``second`` (else ``None``).

    The full views are binomially thinned copies of the genes' counts
    (:class:`sigel.data.views.CountViews` and the batch's gene rows ``idx``,
    :func:`draw_views`; or already ``drawn``); without count views they are
    pixel-dropout copies of ``x`` (:func:`~sigel.model.refine.thin_images`).
    """
    n = n_views(cfg, full_view, second)
    if n and drawn is None:
        drawn = draw_views(cfg, generator, views=views, idx=idx, n=n, device=x.device, dtype=x.dtype)
    if cfg.denoise == "split" and drawn:
        out = model(drawn[-2], mask_ratio=cfg.mask_ratio, generator=generator, target=drawn[-1])
    elif cfg.denoise and drawn:
        out = model(drawn[-1], mask_ratio=cfg.mask_ratio, generator=generator, target=x)
    else:
        out = model(x, mask_ratio=cfg.mask_ratio, generator=generator)
    if not full_view:
        return out, out["z"], None
    if drawn:
        z = model.embed(drawn[0])
        z2 = model.embed(drawn[1]) if second else None
    else:
        z = model.embed(thin_images(x, cfg.thinning, generator))
        z2 = model.embed(thin_images(x, cfg.thinning, generator)) if second else None
    return out, z, z2


def gradient_steps(model, images, batches, optimizer, *, state: RefineState, device, step0: int, total_steps: int,
                   warmup_steps: int, cfg: TrainConfig, mask_generator: torch.Generator | None, epoch: int,
                   views=None, after_step=None) -> dict:
    """One pass of AdamW steps over ``batches``; returns the mean of every loss term.

    Parameters
    ----------
    model
        The masked autoencoder (train mode is set here).
    images
        :class:`sigel.GeneImages`.
    batches
        Iterable of gene-index tensors.
    optimizer
        From :func:`make_optimizer`.
    state
        The epoch's :class:`~sigel.model.refine.RefineState`.
    device
        Torch device.
    step0, total_steps, warmup_steps
        Global step counter at the start, and the schedule's lengths.
    cfg
        :class:`TrainConfig`.
    mask_generator
        Generator for the patch masking (on ``device``).
    epoch
        0-based epoch, for error messages.
    views
        Optional :class:`sigel.data.views.CountViews` of ``images`` (count
        thinning for the full views; see :func:`training_views`).
    after_step
        Optional ``after_step(step)`` called after every optimiser step with
        the 0-based global step (the weight average's update).

    Returns
    -------
    dict
        Mean of each named term over the batches (``'total'`` included) and
        ``'lr'`` (the last learning rate used).

    Raises
    ------
    FloatingPointError
        A loss term is NaN or infinite (names epoch, batch and term).
    """
    model.train()
    w = state.weights
    full_view = uses_full_view(cfg, w)
    sums: dict = {}
    n = 0
    lr = cfg.lr
    for b, idx in enumerate(batches):
        lr = lr_at(step0 + b, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = images.to_tensor(idx.numpy(), device=device)
        idx_d = idx.to(device)
        with _autocast(device, cfg.amp):
            out, z, z2 = training_views(model, x, cfg, mask_generator, full_view, views=views, idx=idx.numpy(),
                                        second=w.get("invariance", 0.0) > 0)
        terms = refinement_losses(out["loss"].float(), z.float(), idx_d, state,
                                  None if z2 is None else z2.float())
        for name, v in terms.items():
            if not torch.isfinite(v):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}, batch {b + 1}: term {name!r} = {float(v.detach())}"
                )
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step(step0 + b)
        for name, v in terms.items():
            sums[name] = sums.get(name, 0.0) + float(v.detach())
        n += 1
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["lr"] = lr
    return out


class WeightAverage:
    """An exponential moving average of a model's weights (a "mean teacher").

    After every optimiser step ``update(step)`` moves the copy towards the
    live weights: ``avg <- d * avg + (1 - d) * w`` with
    ``d = min(decay, step / (step + 1))`` (a plain running mean over the first
    ``1 / (1 - decay)`` steps). Buffers are copied as they are.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy

        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._live = model

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the live weights after gradient step ``step`` (0-based) into the average."""
        d = min(self.decay, step / (step + 1.0))
        for a, w in zip(self.module.parameters(), self._live.parameters()):
            a.lerp_(w.detach(), 1.0 - d)
        for a, w in zip(self.module.buffers(), self._live.buffers()):
            a.copy_(w)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Write the averaged weights into ``model``."""
        for a, w in zip(self.module.parameters(), model.parameters()):
            w.copy_(a)


# -------------------------------------------------------------------- trainer
class Trainer:
    """Runs pre-training and self-paced refinement for one model on one image set.

    Parameters
    ----------
    model
        :class:`sigel.model.mae.MaskedAutoencoder` (moved to ``device``).
    mixture
        :class:`sigel.model.mixture.StudentTMixture` with ``K`` components.
    images
        :class:`sigel.GeneImages` (the training genes).
    config
        :class:`TrainConfig`.
    device
        Torch device.
    seed
        Seeds the batch order, the masking draws and (through the mixture's own
        seed) the k-means++ initialisation.
    progress
        Show a tqdm bar (``None``: ``sigel.settings.show_progress()``).
    callback
        Optional ``callback(epoch, record, Z, resp)`` called after each epoch's
        mixture step (diagnostics; ``resp`` is ``None`` in pre-training).
    views
        Optional :class:`sigel.data.views.CountViews` of ``images``: the
        full views (and the two views of the invariance term) are then
        binomially thinned counts instead of pixel dropout.
    checkpoint
        Optional :class:`sigel.train.checkpoint.Checkpointer`: restores the
        training state before the first epoch and saves it at epoch ends.
    """

    def __init__(self, model, mixture, images, config: TrainConfig, *, device, seed: int = 0,
                 progress: bool | None = None, callback=None, views=None, checkpoint=None):
        self.views = views
        self.model = model.to(device)
        self.mixture = mixture
        self.images = images
        self.cfg = config
        self.device = torch.device(device)
        self.seed = int(seed)
        self.progress = settings.show_progress(progress)
        self.callback = callback
        self._detection = None
        self.checkpoint = checkpoint
        self.ema = WeightAverage(self.model, config.ema_decay) if config.ema_decay > 0 else None

    # -- pieces ---------------------------------------------------------
    def _state(self, Z, resp, selected, epoch, graph) -> RefineState:
        cfg = self.cfg
        w_scaf = 0.0
        if graph is not None and cfg.scaffold_end > 0:
            w_scaf = cfg.scaffold_weight * max(0.0, 1.0 - epoch / cfg.scaffold_end)
        refining = resp is not None
        if refining:
            p = self.mixture.params
            pi = p.log_pi.exp().to(Z.dtype)
            center = (pi[:, None] * p.mu.to(Z.dtype)).sum(0)
            prototypes = p.mu.to(Z.dtype)
            labels = resp.argmax(1)
        else:
            center = Z.mean(0)
            prototypes = labels = None
        bank = torch.nn.functional.normalize(Z - center, dim=1)
        weights = {
            "recon": 1.0,
            "contrastive": cfg.contrastive_weight if refining else 0.0,
            "mixture": cfg.mixture_weight if refining else 0.0,
            "scaffold": w_scaf,
            "invariance": cfg.invariance_weight if Z.shape[0] > 1 else 0.0,
            "spread": cfg.spread_weight,
        }
        return RefineState(embeddings=Z, labels=labels, selected=selected, prototypes=prototypes, center=center,
                           bank=bank, mixture=self.mixture if refining else None, graph=graph, weights=weights,
                           temperature=cfg.temperature, self_weight=cfg.scaffold_self_weight,
                           view_temperature=cfg.view_temperature)

    @staticmethod
    def _check_spread(Z: torch.Tensor, epoch: int) -> None:
        if not torch.isfinite(Z).all():
            raise FloatingPointError(f"non-finite embeddings at epoch {epoch + 1}")
        spread = float(Z.var(0, unbiased=False).sum()) if Z.shape[0] > 1 else 1.0
        if spread < 1e-10:
            logger.warning("epoch %d: the embeddings have collapsed to a point (total variance %.2e)",
                           epoch + 1, spread)

    def _diagnostics(self, Z: torch.Tensor) -> dict:
        """Collapse and sampling-noise read-outs of the epoch's vectors (see :mod:`sigel.model.diagnostics`)."""
        from ..model.diagnostics import detection_rate, effective_rank, ridge_cv_r2

        if self._detection is None:
            self._detection = detection_rate(self.images)
        out = {"erank": effective_rank(Z)}
        if self._detection is not None and Z.shape[0] >= 10:
            out["r2_detection"] = ridge_cv_r2(Z, self._detection)
        return out

    # -- hooks (overridden by sigel.train.distributed.DistributedTrainer) ---
    def _build_graph(self):
        """The image kNN scaffold of the training genes (:func:`~sigel.model.scaffold.image_knn_graph`)."""
        return image_knn_graph(self.images, k=self.cfg.scaffold_k, device=self.device,
                               **scaffold_graph_options(self.cfg.scaffold_graph, self.model))

    def _steps_per_epoch(self) -> int:
        """Gradient steps per epoch: ``ceil(G / batch_size)`` (at least 1)."""
        return max(math.ceil(self.images.n_genes / self.cfg.batch_size), 1)

    def _batches(self, generator: torch.Generator) -> list:
        """One epoch's shuffled gene batches (:func:`gene_batches`)."""
        return gene_batches(self.images.n_genes, self.cfg.batch_size, generator)

    def _embed(self, final: bool = False) -> torch.Tensor:
        """``(G, D)`` embeddings of every training gene (:func:`embed_all`; the final ones average
        ``rarefy_draws`` depth-matched draws when the images make them, :func:`embed_draws`)."""
        cfg = self.cfg
        kw = dict(batch_size=cfg.embed_batch_size, device=self.device, amp=cfg.amp)
        if final:
            return embed_draws(self.reader, self.images, cfg.rarefy_draws, **kw)
        return embed_all(self.reader, self.images, **kw)

    @property
    def reader(self) -> torch.nn.Module:
        """The encoder that computes the epoch's vectors and the final ones: the weight average
        (``ema_decay > 0``, :class:`WeightAverage`) or the live model."""
        return self.model if self.ema is None else self.ema.module

    def _after_step(self, step: int) -> None:
        """Called after every optimiser step (``step``: 0-based global step): folds the weights into the average."""
        if self.ema is not None:
            self.ema.update(step)

    def _fit_mixture(self, Z: torch.Tensor, n_iter: int, init: bool) -> torch.Tensor:
        """MAP-EM on ``Z`` (:func:`fit_mixture`); returns the ``(G, K)`` memberships."""
        return fit_mixture(self.mixture, Z, n_iter, init=init, n_init=self.cfg.mixture_n_init, seed=self.seed)

    def _gradient_steps(self, batches, optimizer, state: RefineState, *, step0: int, total_steps: int,
                        warmup_steps: int, mask_generator, epoch: int) -> dict:
        """One epoch of AdamW steps over ``batches`` (:func:`gradient_steps`); returns the mean loss terms."""
        return gradient_steps(self.model, self.images, batches, optimizer, state=state, device=self.device,
                              step0=step0, total_steps=total_steps, warmup_steps=warmup_steps, cfg=self.cfg,
                              mask_generator=mask_generator, epoch=epoch, views=self.views,
                              after_step=self._after_step)

    # -- loop -------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train; returns a :class:`TrainResult`."""
        cfg = self.cfg
        t_start = time.perf_counter()
        batch_gen = torch.Generator().manual_seed(self.seed)
        mask_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        graph = self._scaffold_graph()
        optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        total_steps, warmup_steps = self._step_budget()
        loop = _Loop(optimizer=optimizer, batch_gen=batch_gen, mask_gen=mask_gen, graph=graph,
                     total_steps=total_steps, warmup_steps=warmup_steps)
        if self.checkpoint is not None:
            restored = self.checkpoint.restore(self, optimizer, batch_gen, mask_gen)
            if restored is not None:
                loop.start, loop.step = restored["epoch"], restored["step"]
                loop.prev_labels, loop.history = restored["prev_labels"], restored["history"]
        self._run_epochs(loop)
        if self.ema is not None:  # the averaged weights are the model's
            self.ema.copy_to(self.model)

        # final embeddings and memberships under the final weights
        Z = self._embed(final=True)
        self._check_spread(Z, max(loop.epoch, 0))
        resp = self._fit_mixture(Z, cfg.final_em_iters, loop.prev_labels is None)
        return TrainResult(
            embeddings=Z.detach().cpu().numpy().astype(np.float32),
            memberships=resp.detach().cpu().double().numpy(),
            history=loop.history,
            stop_reason=loop.stop_reason,
            epochs_run=len(loop.history),
            graph=graph,
            seconds=time.perf_counter() - t_start,
        )

    def _scaffold_graph(self):
        """The scaffold graph when the scaffold term is on (``None`` otherwise), timed in the log."""
        cfg, G = self.cfg, self.images.n_genes
        if not (cfg.refine and cfg.scaffold and cfg.scaffold_weight > 0 and G > 1):
            return None
        t0 = time.perf_counter()
        graph = self._build_graph()
        logger.info("scaffold: %d genes x %d neighbours (%.1f s)", G, graph.k, time.perf_counter() - t0)
        return graph

    def _step_budget(self) -> tuple[int, int]:
        """Total gradient steps and warm-up steps of the learning-rate schedule."""
        cfg = self.cfg
        steps_per_epoch = self._steps_per_epoch()
        total_steps = steps_per_epoch * max(cfg.epochs, 1)
        # warm-up: `warmup_epochs` epochs but at least 50 steps (transformers need it), at most 1/10 of training
        warmup_steps = min(max(steps_per_epoch * cfg.warmup_epochs, 50), max(total_steps // 10, 1))
        return total_steps, warmup_steps

    def _run_epochs(self, loop: _Loop) -> None:
        """The epochs from ``loop.start`` on, until the epoch limit or convergence, under a progress bar."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.epochs, initial=max(loop.start, 0), disable=not self.progress, desc="sigel",
                   unit="epoch", leave=True)
        try:
            for epoch in range(max(loop.start, 0), cfg.epochs):
                loop.epoch = epoch
                if not self._run_epoch(epoch, loop, bar):
                    break
        finally:
            bar.close()

    def _run_epoch(self, epoch: int, loop: _Loop, bar) -> bool:
        """One epoch: embeddings, mixture and selection (when refining), gradient steps; ``False`` once converged."""
        cfg = self.cfg
        t0 = time.perf_counter()
        refining = cfg.refine and epoch >= cfg.pretrain_epochs
        rec = {"epoch": epoch + 1, "phase": "refine" if refining else "pretrain"}
        resp = selected = None
        Z = self._epoch_embeddings(epoch, refining, loop.graph, rec)
        if refining:
            resp, frac, converged = self._refine_labels(Z, epoch, loop, rec)
            if converged:
                loop.stop_reason = "converged"
                rec["seconds"] = time.perf_counter() - t0
                loop.history.append(rec)
                bar.update(1)
                bar.set_postfix(change=f"{rec['label_change']:.4f}", s=f"{rec['seconds']:.1f}")
                return False
            selected = select_confident(resp, frac)
            rec["n_selected"] = int(selected.sum())
        if self.callback is not None:
            self.callback(epoch, rec, Z, resp)
        if Z is None:
            Z = torch.zeros(self.images.n_genes, self.model.embed_dim, device=self.device)
        state = self._state(Z, resp, selected, epoch, loop.graph)
        rec["scaffold_weight"] = state.weights["scaffold"]
        batches = self._batches(loop.batch_gen)
        terms = self._gradient_steps(batches, loop.optimizer, state, step0=loop.step, total_steps=loop.total_steps,
                                     warmup_steps=loop.warmup_steps, mask_generator=loop.mask_gen, epoch=epoch)
        loop.step += len(batches)
        rec["loss"] = terms.pop("total")
        rec.update(terms)
        rec["seconds"] = time.perf_counter() - t0
        loop.history.append(rec)
        self._report_epoch(bar, rec, refining)
        if self.checkpoint is not None:
            self.checkpoint.epoch_end(self, epoch, loop.optimizer, loop.batch_gen, loop.mask_gen, step=loop.step,
                                      prev_labels=loop.prev_labels, history=loop.history)
        return True

    def _epoch_embeddings(self, epoch: int, refining: bool, graph, rec: dict):
        """All genes' embeddings when this epoch needs them (checked, diagnostics into ``rec``), else ``None``."""
        cfg = self.cfg
        need_Z = refining or (graph is not None and cfg.scaffold_end > epoch) or cfg.invariance_weight > 0
        if not need_Z:
            return None
        Z = self._embed()
        self._check_spread(Z, epoch)
        rec.update(self._diagnostics(Z))
        return Z

    def _refine_labels(self, Z: torch.Tensor, epoch: int, loop: _Loop, rec: dict):
        """The epoch's mixture step: memberships, selected fraction and whether the labels have converged."""
        cfg = self.cfg
        first = loop.prev_labels is None
        resp = self._fit_mixture(Z, cfg.init_em_iters if first else cfg.em_iters, first)
        labels = resp.argmax(1)
        change = label_change(loop.prev_labels, labels)
        loop.prev_labels = labels
        frac = schedule(epoch, cfg.pretrain_epochs, cfg.ramp_epochs, cfg.select_start, cfg.select_end)
        rec.update(label_change=change, select_fraction=frac,
                   n_contexts_used=int(torch.unique(labels).numel()),
                   mixture_log_posterior=(float(self.mixture.history_[-1]) / self.images.n_genes
                                          if self.mixture.history_ else math.nan))
        converged = not first and epoch >= cfg.ramp_end and change < cfg.tol
        return resp, frac, converged

    @staticmethod
    def _report_epoch(bar, rec: dict, refining: bool) -> None:
        """Advance the progress bar with the epoch's loss (and label change), and log the record."""
        bar.update(1)
        post = {"loss": f"{rec['loss']:.4f}"}
        if refining and not math.isnan(rec.get("label_change", math.nan)):
            post["change"] = f"{rec['label_change']:.4f}"
        post["s"] = f"{rec['seconds']:.1f}"
        bar.set_postfix(post)
        logger.debug("epoch %d %s", rec["epoch"], {k: v for k, v in rec.items()})


@dataclass
class _Loop:
    """The training loop's running state (what a checkpoint keeps besides the weights and the generators)."""

    optimizer: torch.optim.Optimizer
    batch_gen: torch.Generator
    mask_gen: torch.Generator
    graph: object
    total_steps: int
    warmup_steps: int
    history: list = field(default_factory=list)
    prev_labels: torch.Tensor | None = None
    stop_reason: str = "max_epochs"
    step: int = 0
    start: int = -1
    epoch: int = -1
