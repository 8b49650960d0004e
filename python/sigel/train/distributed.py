"""Data-parallel training with ``torch.distributed`` (DDP), and multi-sample training.

Launch any script that calls :meth:`sigel.SIGEL.fit` with ``torchrun``::

    torchrun --nproc_per_node 2 my_script.py        # or: sigel train data.h5ad --out res --nproc 2

Every process (rank) runs the same script; :func:`setup_distributed` sees
``WORLD_SIZE``/``RANK`` in the environment, initialises the process group
(``nccl`` on GPUs, one GPU per rank by ``LOCAL_RANK``; ``gloo`` on CPU) and
:class:`DistributedTrainer` splits the work of every epoch step:

1. **Embedding pass** - each sample's inference batches (``embed_batch_size`` genes)
   are dealt round-robin to the ranks; the ``(G, D)`` result is all-gathered.
2. **Module II (MAP-EM)** - genes split into contiguous shards; each rank
   computes the per-component sufficient statistics of its shard and one
   all-reduce sums them (:mod:`sigel.model.mixture_stats`), so every rank
   holds the same mixture. The k-means++ restarts of the first fit are dealt
   to the ranks (each runs whole restarts on the gathered embeddings, exactly
   as a single process would) and the best one is broadcast.
3. **Self-paced selection** - computed on every rank from the all-gathered
   memberships: identical to a single process by construction.
4. **Gradient steps** - the encoder is wrapped in
   :class:`~torch.nn.parallel.DistributedDataParallel`. All ranks walk the
   same global batch sequence (``batch_size`` genes per step, as in one
   process); each rank takes a contiguous share of every batch. Every loss
   term is normalised by its *global* batch denominator (each rank knows the
   whole batch), so the DDP-averaged gradient is the gradient of the
   one-process batch loss. On CPU the per-gene random draws of a step (patch
   masking, thinning augmentation) are also those of the one-process run:
   each rank skips the draws of the genes before its share
   (:class:`_AlignedDraws`).
5. **Similarity scaffold** - built shard-wise: the smoothed image features in
   blocks, then the kNN rows of each rank's genes against all genes, then
   all-gathered.

Depth-matched draws (:class:`sigel.data.views.RarefiedImages`, the default
``rarefy='auto'``) come from one sequential generator, and binomial draws
cannot be skipped: every rank draws each step's whole batch, every embedding
chunk and every scaffold block as one process does, and keeps its own share
(:func:`sigel.data.views.skip_draws`), so the ranks read the draws a one-process fit reads.

So a ``N``-process fit runs the same algorithm as a one-process fit with the
same seed and hyper-parameters; results differ only by floating-point
rounding (sums over a batch or over genes are split across ranks, which
changes the summation order; see ``docs/performance.md`` and
``tests/python/train/test_distributed.py`` for the measured agreement).
``batch_size`` is the *global* batch: with ``N`` ranks each rank embeds about
``batch_size / N`` genes per step; raise it (and ``lr``) to use many GPUs
fully.

Multi-sample training (:class:`sigel.data.multisample.SampleImages`) goes
through the same trainer (also with one process): batches are bucketed per
sample, each sample keeps its own grid, its own scaffold and its own
memory bank of scaffold negatives; the mixture and the encoder are shared.

Every rank ends with the full results; write files on rank 0 only
(:func:`is_main_process`).
"""
from __future__ import annotations

import atexit
import contextlib
import math
import os
import socket
import subprocess
import sys
import threading
import warnings
from datetime import timedelta

import numpy as np
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .._settings import logger
from ..data.multisample import SampleImages
from ..data.views import skip_draws
from ..model.mixture_stats import fit_sharded
from ..model.refine import RefineState, refinement_losses
from ..model.scaffold import GeneGraph, principal_scores, smoothed_image_features
from .trainer import (Trainer, _autocast, draw_views, embed_all, embed_draws, fit_mixture, lr_at, n_views,
                      scaffold_graph_options, training_views, uses_full_view)

__all__ = [
    "Comm",
    "DistributedTrainer",
    "setup_distributed",
    "distributed_requested",
    "is_main_process",
    "get_rank",
    "get_world_size",
    "sharded_knn_graph",
    "fit_mixture_distributed",
    "launch",
]

_TERMS_KNOWN = ("recon", "contrastive", "mixture", "scaffold")


# ------------------------------------------------------------------ environment
def distributed_requested() -> bool:
    """True when this process is one of several (``torchrun`` environment or an initialised group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that should write outputs."""
    return get_rank() == 0


def _destroy_group():  # pragma: no cover - runs at interpreter exit
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


class Comm:
    """The few collectives the trainer needs, on top of ``torch.distributed`` (or none, for one process).

    Parameters
    ----------
    rank, world_size
        This process and the number of processes.
    backend
        ``'gloo'``, ``'nccl'`` or ``None`` (one process).
    device
        Where collectives run (CUDA for ``nccl``, CPU for ``gloo``).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, backend: str | None = None, device=None):
        self.rank, self.world_size, self.backend = int(rank), int(world_size), backend
        self.device = torch.device(device or "cpu")

    @classmethod
    def single(cls) -> "Comm":
        """A one-process communicator (every collective is the identity)."""
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def __repr__(self) -> str:
        return f"Comm(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    def _in(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.device).contiguous()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over the ranks (a new tensor on ``t``'s device)."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        x = self._in(t).clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x.to(t.device)

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """``src``'s ``t`` on every rank (``t`` gives shape and dtype elsewhere)."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        x = self._in(t).clone()
        dist.broadcast(x, src=src)
        return x.to(t.device)

    def broadcast_object(self, obj, src: int = 0):
        """``src``'s picklable ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def all_gather(self, t: torch.Tensor) -> list:
        """Every rank's ``t`` (same shape on every rank), in rank order."""
        if not self.distributed:
            return [t]
        import torch.distributed as dist

        x = self._in(t)
        out = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(out, x)
        return [o.to(t.device) for o in out]

    def gather_rows(self, values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Assemble a ``(n, ...)`` tensor on every rank from the rows each rank holds.

        Parameters
        ----------
        values
            ``(m, ...)`` this rank's rows (``m`` may differ between ranks, 0 included).
        rows
            ``(m,)`` their global row numbers (disjoint across ranks, covering ``0..n-1``).
        n
            Total rows.

        Returns
        -------
        torch.Tensor
            ``(n, ...)`` on ``values``' device; bitwise copies of the rows.
        """
        rows = torch.as_tensor(rows, dtype=torch.long).to(values.device)
        out = values.new_empty((n,) + tuple(values.shape[1:]))
        if not self.distributed:
            out[rows] = values
            return out
        counts = torch.stack(self.all_gather(torch.tensor([rows.numel()], dtype=torch.long)))
        m = int(counts.max())
        pad_v = values.new_zeros((m,) + tuple(values.shape[1:]))
        pad_v[: len(rows)] = values
        pad_r = torch.full((m,), -1, dtype=torch.long, device=values.device)
        pad_r[: len(rows)] = rows
        for v, r in zip(self.all_gather(pad_v), self.all_gather(pad_r)):
            ok = r >= 0
            out[r[ok]] = v[ok]
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def setup_distributed(device=None, *, backend: str | None = None, timeout_s: float = 1800.0):
    """Join (or initialise) the process group when launched by ``torchrun``; ``None`` otherwise.

    Parameters
    ----------
    device
        The resolved training device (``torch.device``). Under several
        processes a bare ``cuda`` becomes ``cuda:LOCAL_RANK``.
    backend
        Force a backend; default ``nccl`` for CUDA devices, else ``gloo``.
    timeout_s
        Collective timeout.

    Returns
    -------
    (Comm, torch.device) or None
        The communicator and this rank's device; ``None`` for one process.

    Examples
    --------
    >>> from sigel.train.distributed import setup_distributed
    >>> setup_distributed(None) is None    # not under torchrun
    True
    """
    import torch.distributed as dist

    if not distributed_requested():
        return None
    if not dist.is_available():  # pragma: no cover
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
    dev = torch.device(device if device is not None else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    elif dev.type not in ("cpu",):
        raise ValueError(f"distributed training supports CPU (gloo) and CUDA (nccl) devices; got {dev}")
    if not dist.is_initialized():
        be = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs = dict(backend=be, init_method="env://", timeout=timedelta(seconds=timeout_s))
        if be == "nccl":
            kwargs["device_id"] = dev
        try:
            dist.init_process_group(**kwargs)
        except TypeError:  # older torch without device_id
            kwargs.pop("device_id", None)
            dist.init_process_group(**kwargs)
        atexit.register(_destroy_group)
        logger.info("process group: backend %s, rank %d of %d, device %s", be, dist.get_rank(),
                    dist.get_world_size(), dev)
    be = dist.get_backend()
    if be == "nccl" and dev.type != "cuda":
        raise ValueError("the process group uses nccl but the training device is the CPU; use gloo or a GPU")
    comm_dev = dev if be == "nccl" else torch.device("cpu")
    return Comm(dist.get_rank(), dist.get_world_size(), be, comm_dev), dev


# -------------------------------------------------------------------- scaffold
class _RowView:
    """Rows ``start:stop`` of a GeneImages, as much of its interface as the feature builder uses."""

    def __init__(self, images, start: int, stop: int):
        self._im, self._a, self._b = images, int(start), int(stop)
        self.height, self.width, self.mask = images.height, images.width, images.mask

    @property
    def n_genes(self) -> int:
        return self._b - self._a

    def dense(self, idx):
        return self._im.dense(np.asarray(idx, dtype=np.int64) + self._a)


def sharded_knn_graph(images, k: int = 10, *, comm: Comm | None = None, device=None, smooth: str = "box",
                      smooth_radius: int = 1, sigma: float = 2.0, n_components: int | None = None,
                      max_pixels: int = 1024, feature_batch: int = 512, chunk_size: int = 1024) -> GeneGraph:
    """:func:`sigel.model.scaffold.image_knn_graph`, computed shard-wise.

    The smoothed features are built in blocks of ``feature_batch`` genes and
    the ``(chunk x G)`` similarity blocks in chunks of ``chunk_size`` genes
    (the same blocks as the one-process function), dealt round-robin to the
    ranks and all-gathered, so the result is bitwise the one-process graph.

    Parameters
    ----------
    images
        :class:`sigel.GeneImages`.
    k
        Neighbours per gene.
    comm
        Communicator (``None``: one process).
    device, smooth, smooth_radius, sigma, n_components, max_pixels, feature_batch, chunk_size
        As in :func:`~sigel.model.scaffold.image_knn_graph` (the principal
        axes are taken on the gathered features, identically on every rank).

    Returns
    -------
    GeneGraph
        The full graph on every rank.
    """
    comm = comm or Comm.single()
    G = images.n_genes
    r, n = comm.rank, comm.world_size
    opts = dict(smooth=smooth, smooth_radius=smooth_radius, sigma=sigma, max_pixels=max_pixels,
                batch_size=feature_batch, device=device)
    feats, rows = [], []
    for j, a in enumerate(range(0, G, feature_batch)):
        b = min(a + feature_batch, G)
        if j % n == r:
            feats.append(smoothed_image_features(_RowView(images, a, b), **opts))
            rows.append(torch.arange(a, b))
        else:
            skip_draws(images, np.arange(a, b))
    if feats:
        feats, rows = torch.cat(feats), torch.cat(rows)
    else:  # fewer blocks than ranks: contribute nothing (the width comes from a 1-gene dummy, read whole)
        feats = smoothed_image_features(_RowView(getattr(images, "whole_images", images), 0, 1), **opts)[:0]
        rows = torch.zeros(0, dtype=torch.long)
    feats = principal_scores(comm.gather_rows(feats, rows, G), n_components)
    k = int(max(min(k, G - 1), 1)) if G > 1 else 1
    chunks = [(s, min(s + chunk_size, G)) for s in range(0, G, chunk_size)][r::n]
    ind_l, val_l, row_l = [], [], []
    for s, e in chunks:
        sim = feats[s:e] @ feats.T
        rr = torch.arange(e - s, device=sim.device)
        sim[rr, rr + s] = -float("inf")  # no self-loops
        val, ind = torch.topk(sim, k, dim=1)
        ind_l.append(ind)
        val_l.append(val)
        row_l.append(torch.arange(s, e))
    if chunks:
        ind, val, rows = torch.cat(ind_l), torch.cat(val_l), torch.cat(row_l)
    else:
        ind = torch.zeros(0, k, dtype=torch.long, device=feats.device)
        val = feats.new_zeros(0, k)
        rows = torch.zeros(0, dtype=torch.long)
    ind = comm.gather_rows(ind, rows, G)
    val = comm.gather_rows(val, rows, G)
    val = torch.where(torch.isfinite(val), val, torch.zeros_like(val))
    return GeneGraph(indices=ind, weights=val.clamp(min=0.0), similarity=val)


def _concat_graphs(graphs: list, offsets) -> GeneGraph:
    """Per-sample graphs (local indices) -> one graph on global rows, padded to a common ``k`` with weight 0."""
    kmax = max(g.k for g in graphs)
    ind, w, sim = [], [], []
    for g, off in zip(graphs, offsets):
        pad = kmax - g.k
        i, ww, ss = g.indices, g.weights, g.similarity
        if pad:
            i = torch.cat([i, i[:, :1].expand(-1, pad)], 1)
            ww = torch.cat([ww, ww.new_zeros(ww.shape[0], pad)], 1)
            ss = torch.cat([ss, ss.new_zeros(ss.shape[0], pad)], 1)
        ind.append(i + int(off))
        w.append(ww)
        sim.append(ss)
    return GeneGraph(torch.cat(ind), torch.cat(w), torch.cat(sim))


# --------------------------------------------------------------------- mixture
def fit_mixture_distributed(mixture, Z: torch.Tensor, n_iter: int, *, comm: Comm, init: bool = False,
                            n_init: int = 10, seed: int = 0) -> torch.Tensor:
    """:func:`sigel.train.trainer.fit_mixture` across ranks; every rank gets the same mixture.

    ``init``: the k-means++ restarts are dealt round-robin to the ranks; each
    runs whole restarts on the gathered ``Z`` (exactly the one-process
    computation), the best log posterior wins (ties: the lowest restart
    number, as in one process) and its parameters, memberships and history
    are broadcast. Warm start: MAP-EM on contiguous gene shards with
    all-reduced sufficient statistics (:func:`~sigel.model.mixture_stats.fit_sharded`),
    memberships all-gathered. In both cases the parameters are finally
    broadcast from one rank, so they are bitwise identical everywhere.

    Parameters
    ----------
    mixture
        :class:`~sigel.model.mixture.StudentTMixture`.
    Z
        ``(G, D)`` the gathered embeddings (identical on every rank).
    n_iter
        EM iterations (per restart when ``init``).
    comm
        Communicator.
    init, n_init, seed
        As in :func:`~sigel.train.trainer.fit_mixture`.

    Returns
    -------
    torch.Tensor
        ``(G, K)`` memberships (also ``mixture.resp_``).
    """
    if not comm.distributed:
        return fit_mixture(mixture, Z, n_iter, init=init, n_init=n_init, seed=seed)
    G, D = Z.shape
    K = mixture.n_components
    if init:
        best = None
        for r in range(max(int(n_init), 1)):
            if r % comm.world_size != comm.rank:
                continue
            gen = torch.Generator().manual_seed(int(seed) * 1009 + r)
            mixture.init_kmeanspp(Z, generator=gen)
            mixture.fit(Z, n_iter=n_iter, warm_start=True)
            score = float(mixture.log_posterior(Z))
            if best is None or score > best[0]:
                best = (score, r, mixture.params, mixture.resp_, list(mixture.history_))
        mine = torch.tensor([best[0] if best else -math.inf, best[1] if best else math.inf], dtype=torch.float64)
        every = [t.tolist() for t in comm.all_gather(mine)]
        winner = min(range(comm.world_size), key=lambda i: (-every[i][0], every[i][1]))
        if comm.rank == winner:
            mixture.params, mixture.resp_, mixture.history_ = best[2], best[3], best[4]
        else:
            mixture.resp_ = Z.new_empty(G, K)
        mixture.history_ = comm.broadcast_object(mixture.history_ if comm.rank == winner else None, src=winner)
        mixture.var_prior_scale_ = comm.broadcast_object(mixture.var_prior_scale_, src=winner)
        resp = comm.broadcast(mixture.resp_, src=winner)
        src = winner
    else:
        rows = torch.tensor_split(torch.arange(G), comm.world_size)[comm.rank]
        fit_sharded(mixture, Z[rows.to(Z.device)], n_iter, all_reduce=comm.all_reduce_sum)
        resp = comm.gather_rows(mixture.resp_, rows, G)
        src = 0
    _broadcast_params(mixture, comm, src, Z)
    mixture.resp_ = resp
    return resp


def _broadcast_params(mixture, comm: Comm, src: int, like: torch.Tensor) -> None:
    from ..model.mixture import MixtureParams

    K, D = mixture.n_components, like.shape[1]
    p = mixture.params
    if p is None or comm.rank != src:
        tmpl = dict(log_pi=like.new_empty(K), mu=like.new_empty(K, D), var=like.new_empty(K, D), nu=like.new_empty(K))
    else:
        tmpl = {f: getattr(p, f).to(like.device, like.dtype) for f in ("log_pi", "mu", "var", "nu")}
    flat = torch.cat([tmpl["log_pi"], tmpl["mu"].ravel(), tmpl["var"].ravel(), tmpl["nu"]])
    flat = comm.broadcast(flat, src=src)
    lp, mu, var, nu = torch.split(flat, [K, K * D, K * D, K])
    mixture.params = MixtureParams(log_pi=lp.clone(), mu=mu.reshape(K, D).clone(), var=var.reshape(K, D).clone(),
                                   nu=nu.clone())


# --------------------------------------------------------------------- trainer
class _StepModule(nn.Module):
    """One training forward (:func:`~sigel.train.trainer.training_views` plus the per-gene
    reconstruction error) as a single DDP call."""

    def __init__(self, mae: nn.Module, cfg, views=None):
        super().__init__()
        self.mae = mae
        self.cfg = cfg
        self.views = views

    def forward(self, x, generator, full_view: bool, idx=None, second: bool = False, drawn=None):
        out, z, z2 = training_views(self.mae, x, self.cfg, generator, full_view, views=self.views, idx=idx,
                                    second=second, drawn=drawn)
        return out["loss_per_gene"], z, z2


class _AlignedDraws(TorchFunctionMode):
    """Make this rank's random draws the rows a one-process run would draw for its genes.

    Within a training step every ``torch.rand(B, ...)`` drawn from the step
    generator is per gene (leading dimension = batch: the patch masking, the
    thinning augmentation). In one process the whole batch draws ``B x m``
    values in a row; here the rank holding genes ``[before, before + local)``
    of the batch skips ``before x m`` values, draws its ``local x m`` and skips
    the rest, so every rank leaves the generator where one process would. On
    the CPU generator this reproduces the one-process values exactly (draws
    are sequential); on CUDA (Philox offsets) it keeps the ranks' draws
    distinct but not equal to one process. Draws whose leading dimension is
    not the local batch are replayed as they are. A rank holding no genes of
    the batch runs a zero-weight stand-in gene on ``dummy`` and only advances
    the step generator.
    """

    def __init__(self, generator, before: int, local: int, total: int, dummy=None):
        super().__init__()
        self.gen, self.before, self.local, self.total, self.dummy = generator, before, local, total, dummy

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        g = kwargs.get("generator")
        if func is not torch.rand or g is None or (g is not self.gen and g is not self.dummy):
            return func(*args, **kwargs)
        shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else \
            tuple(kwargs.get("size", args))
        extra = dict(device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        per_gene = len(shape) > 0 and shape[0] == self.local
        per = math.prod(shape[1:]) if per_gene else 0
        if g is self.dummy:  # stand-in row: its own generator; the step generator skips the whole batch
            out = func(*args, **kwargs)
            n = self.total * per if per_gene else math.prod(shape)
            if n:
                torch.rand(n, generator=self.gen, **extra)
            return out
        if not per_gene:
            return func(*args, **kwargs)
        if self.before * per:
            torch.rand(self.before * per, generator=self.gen, **extra)
        out = func(*args, **kwargs)
        after = (self.total - self.before - self.local) * per
        if after:
            torch.rand(after, generator=self.gen, **extra)
        return out


class DistributedTrainer(Trainer):
    """:class:`~sigel.train.trainer.Trainer` split over ranks, and/or over several samples.

    Same arguments as ``Trainer`` plus ``comm``; ``images`` may be a
    :class:`sigel.GeneImages` or a :class:`~sigel.data.multisample.SampleImages`.
    With one process and one sample use the plain ``Trainer`` (this class
    also works there, but sums the per-gene losses in another order).

    Parameters
    ----------
    model, mixture, images, config, device, seed, progress, callback
        As in :class:`~sigel.train.trainer.Trainer` (``seed`` is taken from
        rank 0; the progress bar shows on rank 0 only).
    comm
        :class:`Comm` (``None``: one process).
    """

    def __init__(self, model, mixture, images, config, *, device, seed: int = 0, progress=None, callback=None,
                 comm: Comm | None = None, views=None):
        if not isinstance(images, SampleImages):
            images = SampleImages([images], ["sample_0"])
        if images.n_samples != 1:
            views = None  # count views are per sample; several samples use pixel dropout
        comm = comm or Comm.single()
        seed = int(comm.broadcast(torch.tensor([int(seed)], dtype=torch.long))[0])
        super().__init__(model, mixture, images, config, device=device, seed=seed, progress=progress,
                         callback=callback)
        self.comm = comm
        self.progress = bool(self.progress and comm.is_main)
        self.sample_graphs = None
        self.views = views
        self.step_module = _StepModule(self.model, self.cfg, views)
        if comm.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device] if self.device.type == "cuda" else None
            # Buffers stay rank-local (each rank holds the same ones). Newer torch versions
            # deprecate the argument in favour of one that still syncs at init and tell the
            # caller to keep it until that is configurable: a note for us, not for a user.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                self.ddp = DDP(self.step_module, device_ids=ids, broadcast_buffers=False)
        else:
            self.ddp = self.step_module

    # -- hooks --------------------------------------------------------------
    def _build_graph(self):
        cfg, im = self.cfg, self.images
        graphs = [sharded_knn_graph(s, k=cfg.scaffold_k, comm=self.comm, device=self.device,
                                     **scaffold_graph_options(cfg.scaffold_graph, self.model)) for s in im.samples]
        self.sample_graphs = graphs
        return graphs[0] if im.n_samples == 1 else _concat_graphs(graphs, im.offsets[:-1])

    def _steps_per_epoch(self) -> int:
        return max(self.images.n_batches(self.cfg.batch_size), 1)

    def _batches(self, generator):
        return self.images.batches(self.cfg.batch_size, generator)

    def _embed(self, final: bool = False) -> torch.Tensor:
        """Every gene's vector (:meth:`Trainer._embed`), each sample's batches dealt round-robin to the ranks
        (``shard`` of :func:`~sigel.train.trainer.embed_all` and :func:`~sigel.train.trainer.embed_draws`)."""
        cfg, im, comm = self.cfg, self.images, self.comm
        kw = dict(batch_size=cfg.embed_batch_size, device=self.device, amp=cfg.amp,
                  shard=(comm.rank, comm.world_size))
        parts, rows = [], []
        for s, images in enumerate(im.samples):
            Z, own = embed_draws(self.reader, images, cfg.rarefy_draws, **kw) if final \
                else embed_all(self.reader, images, **kw)
            own = torch.from_numpy(np.flatnonzero(own))
            parts.append(Z[own.to(Z.device)])
            rows.append(own + int(im.offsets[s]))
        return self.comm.gather_rows(torch.cat(parts), torch.cat(rows), im.n_genes)

    def _fit_mixture(self, Z, n_iter, init):
        return fit_mixture_distributed(self.mixture, Z, n_iter, comm=self.comm, init=init,
                                       n_init=self.cfg.mixture_n_init, seed=self.seed)

    def _sample_state(self, state: RefineState, s: int) -> RefineState:
        """The epoch state restricted to sample ``s`` (its rows, its scaffold, its bank of negatives)."""
        im = self.images
        if im.n_samples == 1:
            return state
        a, b = int(im.offsets[s]), int(im.offsets[s + 1])

        def sl(t):
            return None if t is None else t[a:b]

        graph = self.sample_graphs[s] if (state.graph is not None and self.sample_graphs) else None
        return RefineState(embeddings=state.embeddings[a:b], labels=sl(state.labels), selected=sl(state.selected),
                           prototypes=state.prototypes, center=state.center, bank=state.bank[a:b],
                           mixture=state.mixture, graph=graph, weights=state.weights, temperature=state.temperature,
                           self_weight=state.self_weight, view_temperature=state.view_temperature)

    @staticmethod
    def _shard_factors(terms: dict, st: RefineState, loc: torch.Tensor, glob: torch.Tensor) -> dict:
        """Per-term factors turning a mean over this rank's genes into its share of the global-batch mean."""
        n_l, n_g = len(loc), len(glob)
        f = {"recon": 1.0}  # recon is passed as sum / global batch size already
        for name in terms:
            if name in ("total", "recon"):
                continue
            if name == "contrastive":
                if st.selected is None:
                    f[name] = n_l / n_g
                else:
                    sl, sg = int(st.selected[loc].sum()), int(st.selected[glob].sum())
                    f[name] = max(sl, 1) / max(sg, 1)
            elif name in ("mixture", "invariance"):
                f[name] = n_l / n_g
            elif name == "spread":  # set by the caller (the term uses the whole batch)
                f[name] = n_l / n_g
            elif name == "scaffold":
                hl = int((st.graph.weights[loc].sum(1) > 0).sum())
                hg = int((st.graph.weights[glob].sum(1) > 0).sum())
                f[name] = hl / hg if hg > 0 else 0.0
            else:
                raise NotImplementedError(f"the data-parallel trainer does not know how to shard loss term {name!r}")
        return f

    def _batch_rows(self, z: torch.Tensor, n_own: int) -> torch.Tensor:
        """The whole batch's vectors in rank order: this rank's ``n_own`` rows live, the others' detached."""
        comm = self.comm
        if not comm.distributed:
            return z[:n_own]
        counts = [int(c) for c in torch.stack(comm.all_gather(torch.tensor([n_own], dtype=torch.long))).ravel()]
        pad = z.new_zeros((max(max(counts), 1), z.shape[1]))
        pad[:n_own] = z[:n_own].detach()
        parts = [p[:c] for p, c in zip(comm.all_gather(pad), counts)]
        parts[comm.rank] = z[:n_own]
        return torch.cat(parts, dim=0)

    def _gradient_steps(self, batches, optimizer, state, *, step0, total_steps, warmup_steps, mask_generator, epoch):
        cfg, comm, device, im = self.cfg, self.comm, self.device, self.images
        self.ddp.train()
        w = state.weights
        full_view = uses_full_view(cfg, w)
        views = [self._sample_state(state, s) for s in range(im.n_samples)]
        dummy_gen = None
        sums: dict = {}
        n = 0
        lr = cfg.lr
        params = [p for p in self.model.parameters() if p.requires_grad]
        for b, idx in enumerate(batches):
            lr = lr_at(step0 + b, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            idx = torch.as_tensor(idx, dtype=torch.long)
            s = int(im.sample_of(idx[:1].numpy())[0])
            off = int(im.offsets[s])
            sample, st = im.samples[s], views[s]
            glob = idx - off
            parts = torch.tensor_split(glob, comm.world_size)
            loc = parts[comm.rank]
            before = sum(len(p) for p in parts[: comm.rank])
            scale, gen = 1.0, mask_generator
            if len(loc) == 0:  # more ranks than genes in this batch: a zero-weight stand-in keeps DDP in step
                loc, scale = glob[:1], 0.0
                if dummy_gen is None:
                    dummy_gen = torch.Generator(device=device).manual_seed(self.seed + 7)
                gen = dummy_gen
            if getattr(sample, "draws", False):  # depth-matched draws: the whole batch, as one process draws it
                x = sample.to_tensor(glob.numpy(), device=device)
                x = x[before:before + len(loc)] if scale else x[:1]
            else:
                x = sample.to_tensor(loc.numpy(), device=device)
            loc_d, glob_d = loc.to(device), glob.to(device)
            second = w.get("invariance", 0.0) > 0
            drawn = None
            n_draw = n_views(cfg, full_view, second)
            if n_draw and self.views is not None:
                # count views of the whole batch, drawn on every rank from the step generator exactly as one
                # process draws them (binomial draws cannot be skipped), then this rank's rows
                rows = slice(before, before + len(loc)) if scale else slice(0, 1)
                drawn = [v[rows] for v in draw_views(cfg, mask_generator, views=self.views, idx=glob.numpy(),
                                                     n=n_draw, device=device, dtype=x.dtype)]
            align = _AlignedDraws(mask_generator, before, len(loc), len(glob), dummy=dummy_gen if scale == 0 else None) \
                if mask_generator is not None else contextlib.nullcontext()
            with align, _autocast(device, cfg.amp):
                per, z, z2 = self.ddp(x, gen, full_view, loc.numpy(), second, drawn)
            recon = per.float().sum() / len(glob)
            spread_batch = None
            if w.get("spread", 0.0) > 0:
                spread_batch = self._batch_rows(z.float(), len(loc) if scale else 0)
            terms = refinement_losses(recon, z.float(), loc_d, st, None if z2 is None else z2.float(), spread_batch)
            factors = self._shard_factors(terms, st, loc_d, glob_d)
            report = dict(factors)
            if "spread" in terms:
                # every rank holds the whole batch's spread term (own rows live): the gradients add up over the
                # ranks to the one-process gradient (factor 1), the value is counted once (1 / world size)
                factors["spread"], report["spread"] = 1.0, 1.0 / comm.world_size
            names = [k for k in terms if k != "total"]
            total = sum(w.get(k, 1.0 if k == "recon" else 0.0) * factors[k] * terms[k] for k in names) * scale
            shown = sum(w.get(k, 1.0 if k == "recon" else 0.0) * report[k] * terms[k] for k in names) * scale
            # the global value of every term (and the finite check) in one small all-reduce
            vec = torch.stack([terms[k].detach().float() * report[k] * scale for k in names] + [shown.detach().float()])
            vec = comm.all_reduce_sum(vec)
            for name, v in zip(names + ["total"], vec.tolist()):
                if not math.isfinite(v):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch + 1}, batch {b + 1}: term {name!r} = {v}")
            optimizer.zero_grad(set_to_none=True)
            (total * comm.world_size).backward()  # DDP averages the gradients over the ranks
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            self._after_step(step0 + b)
            for name, v in zip(names + ["total"], vec.tolist()):
                sums[name] = sums.get(name, 0.0) + v
            n += 1
        out = {k: v / max(n, 1) for k, v in sums.items()}
        out["lr"] = lr
        return out


# -------------------------------------------------------------------- launcher
def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _LauncherStopped(Exception):
    """SIGTERM/SIGHUP arrived while waiting for the torchrun launcher."""


def launch(module_args: list, nproc: int, *, module: str = "sigel.cli", env: dict | None = None,
           port: int | None = None, timeout: float | None = None) -> int:
    """Run ``python -m <module> <module_args>`` in ``nproc`` processes with ``torch.distributed.run``.

    Parameters
    ----------
    module_args
        Arguments of the module (e.g. ``['train', 'x.h5ad', '--out', 'res']``).
    nproc
        Processes on this machine (one per GPU on a GPU machine).
    module
        The Python module each process runs.
    env
        Extra environment variables.
    port
        Rendezvous port (default: a free one).
    timeout
        Seconds before the whole process group is killed (``None``: no limit).

    Returns
    -------
    int
        The launcher's exit status (124 on timeout; ``128 + signal`` when this
        process received SIGTERM or SIGHUP, which it forwards to the launcher
        and its workers, waiting for them to stop).
    """
    import signal

    import sigel

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(sigel.__file__)))
    e = dict(os.environ)
    if env:
        e.update({k: str(v) for k, v in env.items()})
    e["PYTHONPATH"] = pkg_root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(int(nproc)),
           "--master_addr", "127.0.0.1", "--master_port", str(port or free_port()), "-m", module, *module_args]
    logger.info("launching: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=e, start_new_session=True)

    def stop_group(grace: float = 15.0) -> None:
        """SIGTERM the launcher's whole process group (torchrun and its workers), then SIGKILL after ``grace``."""
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # torchrun's agent stops its workers on SIGTERM
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:  # workers that outlived the launcher are still in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    # the launcher runs in its own session (so a terminal's Ctrl-C reaches it only through us): forward
    # SIGTERM/SIGHUP to the whole group and wait for it, rather than leaving orphans that keep training
    received: list = []

    def forward(signum, frame):
        if received:  # already stopping the group
            return
        received.append(signum)
        raise _LauncherStopped(signum)

    watched = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {sig: signal.signal(sig, forward) for sig in watched}
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group()
        return 124
    except _LauncherStopped:
        stop_group()
        return 128 + int(received[0])
    except KeyboardInterrupt:  # pragma: no cover
        stop_group()
        raise
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
