"""The `SIGEL` model object: fit / transform / save / load and the AnnData writer.

The facade over the model layer (``sigel.model``: masked autoencoder,
Student-t mixture, refinement losses, scaffold) and the training loop
(``sigel.train``). It owns the data (gene images), the hyper-parameters and
the results; the network classes hold tensor maths only. The saved-model
directory format and the AnnData writer live in :mod:`sigel.io.model_dir`
(``save`` / ``load`` / ``write_to`` call it).
"""
from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ._defaults import HYPER as _D
from ._settings import logger, resolve_device, seeded, set_threads, settings, thread_scope
from ._validate import SigelInputError, as_int, as_real, as_seed, assert_in_range, assert_one_of, assert_positive
from .data.images import GeneImages, check_rarefy, rarefy_off
from .data.setup import DataSetup
# the saved-model format lives in sigel.io.model_dir; its names stay importable from here
from .io.model_dir import (  # noqa: F401
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    WEIGHTS_FILE,
    _check_config_types,
    _owned_files,
    _read_manifest,
    _sha256,
    _write_manifest,
)
from .io.model_dir import jsonable as _jsonable
from .io.model_dir import load_model, save_model, write_to_anndata

__all__ = ["SIGEL", "embed", "default_n_contexts"]


def default_n_contexts(n_genes: int) -> int:
    """Default number of contexts for ``n_genes`` genes: ``round(G / 30)`` bounded to [2, 50] (and < G)."""
    k = int(round(n_genes / 30.0))
    k = min(max(k, 2), 50)
    return int(max(min(k, n_genes - 1), 1))


def _auto_patch_size(height: int, width: int, max_tokens: int, minimum: int = 4) -> int:
    """Smallest power-of-two patch (>= ``minimum``) whose patch grid has at most ``max_tokens`` cells."""
    p = 1
    while p < minimum:
        p *= 2
    while math.ceil(height / p) * math.ceil(width / p) > max_tokens and p < max(height, width):
        p *= 2
    return p


def _gene_index(genes) -> pd.Index:
    """Row labels of the results: a ``(sample, gene)`` MultiIndex as it is, else an Index named ``gene``."""
    if isinstance(genes, pd.MultiIndex):
        return genes.set_names(["sample", "gene"]) if genes.nlevels == 2 else genes
    return pd.Index(genes, name="gene")


#: ``draws='depth'`` reads a gene at most this many times ``rarefy_draws``.
DEPTH_DRAWS_MAX = 8

# ------------------------------------------------------------ hyper-parameters
_INT_PARAMS = ("n_contexts", "embed_dim", "patch_size", "max_tokens", "width", "depth", "n_heads",
               "decoder_width", "epochs", "pretrain_epochs", "batch_size", "warmup_epochs", "scaffold_k",
               "em_iters", "embed_batch_size", "rarefy_draws")
_OPTIONAL = ("n_contexts", "patch_size", "epochs", "pretrain_epochs")
_REAL_PARAMS = ("mlp_ratio", "mask_ratio", "lr", "weight_decay", "scaffold_weight", "dirichlet_alpha",
                "contrastive_weight", "mixture_weight", "temperature", "select_start", "select_end", "tol",
                "invariance_weight", "view_temperature", "thin_min", "spread_weight", "smooth_sigma", "ema_decay")


def _check_types(p: dict) -> dict:
    """Type-check every hyper-parameter (naming it); returns a copy with plain ints/floats."""
    p = dict(p)
    for k in _INT_PARAMS:
        if k in p:
            p[k] = as_int(k, p[k], allow_none=k in _OPTIONAL)
    for k in _REAL_PARAMS:
        if k in p:
            p[k] = as_real(k, p[k])
    for k in ("mixture", "input_norm", "recon_loss", "scaffold_graph"):
        if k in p and p[k] is not None and not isinstance(p[k], str):
            raise SigelInputError(f"`{k}` must be a string; got {p[k]!r} ({type(p[k]).__name__})")
    return p


def _denoise(value) -> bool | str:
    """The ``denoise`` setting as the trainer takes it: ``'split'`` or a plain bool."""
    return "split" if value == "split" else bool(value)


def _validate_params(p: dict) -> None:
    """Check the ranges of the hyper-parameters and the relations between them, naming the culprit."""
    if p["n_contexts"] is not None:
        assert_positive("n_contexts", p["n_contexts"])
    for k in ("embed_dim", "max_tokens", "width", "depth", "n_heads", "decoder_width",
              "batch_size", "scaffold_k", "embed_batch_size"):
        assert_positive(k, p[k])
    if p["epochs"] is not None:
        assert_positive("epochs", p["epochs"])
    if p["pretrain_epochs"] is not None:
        assert_positive("pretrain_epochs", p["pretrain_epochs"], allow_zero=True)
    for k in ("warmup_epochs", "em_iters", "weight_decay", "scaffold_weight",
              "contrastive_weight", "mixture_weight", "tol", "invariance_weight", "spread_weight"):
        assert_positive(k, p[k], allow_zero=True)
    assert_positive("lr", p["lr"])
    assert_positive("temperature", p["temperature"])
    assert_positive("view_temperature", p["view_temperature"], allow_zero=True)
    assert_in_range("thin_min", p["thin_min"], 1e-3, 1.0)
    assert_positive("mlp_ratio", p["mlp_ratio"])
    assert_in_range("mask_ratio", p["mask_ratio"], 0.0, 0.95)
    assert_in_range("select_start", p["select_start"], 1e-6, 1.0)
    assert_in_range("select_end", p["select_end"], p["select_start"], 1.0)
    assert_one_of("mixture", p["mixture"], ("student_t", "gaussian"))
    assert_one_of("input_norm", p["input_norm"], (None, "none", "standardize", "smooth", "gaussian", "rank"))
    assert_positive("smooth_sigma", p["smooth_sigma"])
    assert_one_of("recon_loss", p["recon_loss"], ("mse", "pearson"))
    assert_one_of("scaffold_graph", p["scaffold_graph"], ("box", "pca"))
    if p["dirichlet_alpha"] < 1:
        raise SigelInputError(f"`dirichlet_alpha` must be >= 1; got {p['dirichlet_alpha']!r}")
    if p["patch_size"] is not None:
        ps = int(p["patch_size"])
        if ps < 1 or ps & (ps - 1):
            raise SigelInputError(f"`patch_size` must be a power of two (or None); got {p['patch_size']!r}")
    if p["width"] % p["n_heads"] or p["width"] % 4:
        raise SigelInputError(
            f"`width` must be divisible by 4 and by `n_heads`; got width={p['width']}, n_heads={p['n_heads']}"
        )
    if p["decoder_width"] % 4:
        raise SigelInputError(f"`decoder_width` must be divisible by 4; got {p['decoder_width']}")
    if not 0.0 <= p["ema_decay"] < 1.0:
        raise SigelInputError(f"`ema_decay` must be in [0, 1); got {p['ema_decay']!r}")
    check_rarefy(p["rarefy"])
    assert_positive("rarefy_draws", p["rarefy_draws"])
    for k in ("refine", "scaffold", "amp", "patch_stem"):
        if k in p and not isinstance(p[k], (bool, np.bool_)):
            raise SigelInputError(f"`{k}` must be True or False; got {p[k]!r}")
    if "denoise" in p and not (isinstance(p["denoise"], (bool, np.bool_)) or p["denoise"] == "split"):
        raise SigelInputError(f"`denoise` must be True, False or 'split'; got {p['denoise']!r}")


# ------------------------------------------------------------ fit steps
def _genes_and_contexts(images, n_contexts) -> tuple[int, int]:
    """Check the images of a fit; returns the number of genes G and of contexts K (``n_contexts`` resolved)."""
    from .data.multisample import SampleImages

    if not isinstance(images, (GeneImages, SampleImages)):
        raise SigelInputError(f"`images` must be a sigel.GeneImages (or SampleImages); got {type(images).__name__}")
    G = images.n_genes
    if G < 2:
        raise SigelInputError(f"need at least 2 genes to fit; got {G}")
    K = int(n_contexts) if n_contexts is not None else default_n_contexts(G)
    if K > G:
        raise SigelInputError(f"`n_contexts` ({K}) is larger than the number of genes ({G})")
    if G < 10 * K:
        logger.warning("only %d genes for %d contexts; contexts will be small and unstable", G, K)
    return G, K


def _check_fit_options(seed, n_threads, checkpoint_every, resume, checkpoint_dir) -> tuple[int, int]:
    """Check the run options of a fit; returns the seed (``None``: ``sigel.settings.seed``) and ``checkpoint_every``."""
    seed = as_seed("seed", seed)
    if seed is None:
        seed = as_seed("sigel.settings.seed", settings.seed, allow_none=False)
    if n_threads is not None and as_int("n_threads", n_threads) < 1:
        raise SigelInputError(f"`n_threads` must be >= 1; got {n_threads!r}")
    checkpoint_every = as_int("checkpoint_every", checkpoint_every)
    if not isinstance(resume, (bool, np.bool_)):
        raise SigelInputError(f"`resume` must be True or False; got {resume!r}")
    if checkpoint_dir is None and resume:
        raise SigelInputError("`resume=True` needs `checkpoint_dir`")
    return seed, checkpoint_every


def _checkpointer(images, comm, checkpoint_dir, checkpoint_every: int, resume, seed: int):
    """The fit's :class:`~sigel.train.checkpoint.Checkpointer` (``None`` without ``checkpoint_dir``)."""
    from .data.multisample import SampleImages

    if checkpoint_dir is None:
        return None
    if comm is not None or (isinstance(images, SampleImages) and images.n_samples > 1):
        raise SigelInputError("`checkpoint_dir` works for one process and one sample; it is not "
                              "supported under torchrun or for multi-sample fits")
    from .train.checkpoint import Checkpointer

    return Checkpointer(checkpoint_dir, every=checkpoint_every, resume=bool(resume), seed=seed)


def _patch_size_for(images, p: dict) -> int:
    """The patch size of a fit: ``patch_size``, else the automatic one for the image size."""
    min_patch = int(images.settings.get("patch_size", 4) or 4)
    if p["patch_size"] is not None:
        return int(p["patch_size"])
    return _auto_patch_size(images.height, images.width, int(p["max_tokens"]), minimum=min(min_patch, 4))


def _check_rarefied_fit(images, rarefy) -> None:
    """Depth-matched draws (``rarefy``) are for single-sample fits (one process or ``torchrun``), on images that
    keep counts."""
    from .data.multisample import SampleImages

    if rarefy == "auto" and isinstance(images, GeneImages) and images.counts is None:
        if images.settings.get("rarefy_off"):
            return  # the image builder turned it off and said why
        rarefy_off("these prebuilt images keep no counts (build them with `GeneImages.from_anndata(..., "
                   "rarefy='auto')`, or use `fit`)", stacklevel=5)
    elif rarefy is not None and isinstance(images, GeneImages) and images.counts is None:
        raise SigelInputError(f"SIGEL(rarefy={rarefy!r}) reads depth-matched draws of the counts; build the images "
                              "with `GeneImages.from_anndata(..., rarefy=...)`, which keeps them, or use `fit`")

    several = isinstance(images, SampleImages) and images.n_samples > 1 and any(
        im.settings.get("rarefy") is not None for im in images.samples)
    if several:
        raise SigelInputError("`rarefy` (depth-matched draws) is for single-sample fits; "
                              "fit several samples with rarefy=None")


def _write_out_file(model, out_file, comm) -> None:
    """Write a fitted model's results to ``out_file`` (rank 0 only under torchrun)."""
    from .train.distributed import is_main_process

    if is_main_process():
        from .io.results import write_results_h5

        write_results_h5(out_file, model)
        logger.info("results -> %s", out_file)
    if comm is not None:
        comm.barrier()


class SIGEL:
    """SIGEL gene embeddings: masked autoencoder + Student-t mixture + self-paced refinement.

    Learns one vector per gene from its spatial expression image such that
    genes with similar spatial patterns lie close, and organises the space
    into soft contexts (Li et al., Genome Biology 26:287, 2025; our design
    choices are in ``docs/design.md``).

    All parameters are keyword-only; they are captured in ``init_params_``
    (JSON-serialisable) and saved with the model.

    Parameters
    ----------
    n_contexts
        Number of contexts K (mixture components). ``None``: ``round(G / 30)``
        bounded to [2, 50], from the number of genes G at fit time.
    embed_dim
        Dimension D of the gene vectors.
    patch_size
        Patch side in pixels (a power of two). ``None``: 4, doubled while the
        patch grid has more than ``max_tokens`` cells (e.g. 8 for Visium DLPFC
        80 x 60 images), which keeps the encoder fast on a CPU.
    max_tokens
        Patch-grid budget for the automatic ``patch_size``.
    width, depth, n_heads, mlp_ratio
        Transformer encoder: token width, blocks, attention heads, MLP ratio.
        One head by default (earlier models used 4 and load with them): on
        two DLPFC sections and the olfactory bulb the head count moved the
        gene vectors less than the seed does, and one head fits about 1.5x
        and embeds about 1.5x faster on a CPU, where the attention's cost
        grows with the number of heads (docs/performance.md).
        ``depth=2`` fits about 1.5x and embeds about 1.6x faster than the
        default 4 blocks (measured with 4 heads), with gene vectors about as
        good on Visium sections but less SVG power on small tissues.
    decoder_width
        Channels of the convolutional decoder at patch resolution.
    patch_stem
        Module I's patch embedding. ``False``: one linear map per patch (as
        in ViT/MAE). ``True``: two layers, a convolution into as many
        channels as the patch holds values, a GELU, and a 1x1 convolution to
        ``width`` (:class:`sigel.model.mae.MaskedAutoencoder`); the
        transformer blocks, and so most of the cost, are unchanged. Models
        saved before this option existed load with ``False``.
    mask_ratio
        Fraction of in-tissue patches hidden from the encoder per step. Our
        default 0.75 rather than the common ~0.5 (docs/design.md §3): on
        small, noisy gene images a 50 % mask makes reconstruction a local
        interpolation task and the pooled vector learns little about the
        whole pattern; 0.75 is also cheaper.
    input_norm
        ``'gaussian'`` (default): each gene image is passed through a masked
        Gaussian filter of ``smooth_sigma`` pixels (the mean of its in-tissue
        neighbours, background ignored: the sampling noise of a shallow gene
        is averaged over neighbouring spots), then centred and scaled to unit
        variance over the tissue before encoding (and reconstruction), so
        vectors describe the pattern's shape, not how many spots express the
        gene; ``'standardize'``: centred and scaled without the filter (the
        earlier default, still used by models saved with it; on three real sections its vectors read
        detection rate back more easily and formed fewer pathway-enriched
        clusters, see ``benchmarks/RESULTS.md``); ``'smooth'``: a 3x3 box
        filter instead of the Gaussian; ``'rank'``: the Gaussian filter, then
        the normal scores of each image's ranks (every gene's values get the
        same distribution, only their arrangement differs); ``None`` (or
        ``'none'``): the image values as built.
    smooth_sigma
        Width (pixels) of the ``'gaussian'`` input smoothing.
    recon_loss
        Module I's reconstruction loss on the hidden patches: ``'mse'``
        (squared error) or ``'pearson'`` (one minus the per-gene correlation,
        blind to a gene's background level; see
        :class:`~sigel.model.mae.MaskedAutoencoder`).
    epochs
        Maximum number of epochs in total (pre-training included). ``None``:
        enough for about 4,000 gradient steps, bounded to [16, 60] epochs
        (60 for a few hundred genes, 16 for 8,000 genes).
    pretrain_epochs
        Epochs before refinement starts (reconstruction plus the scaffold
        term). ``None``: half of ``epochs``.
    batch_size
        Genes per gradient step.
    lr, weight_decay, warmup_epochs
        AdamW learning rate (linear warm-up over ``warmup_epochs`` epochs but
        at least 50 and at most a tenth of all steps, then cosine decay to
        ``lr / 20``), decoupled weight decay (not on biases and norms).
    ema_decay
        A running average of the encoder's weights (an exponential moving
        average, a "mean teacher"), updated after every gradient step:
        ``avg = ema_decay * avg + (1 - ema_decay) * weights`` (a plain mean
        over the first ``1 / (1 - ema_decay)`` steps). The averaged encoder
        computes every epoch's vectors -- the ones the mixture (Module II),
        the self-paced selection and the refinement's targets (Module III)
        are taken from -- and it is the model that is returned, saved and
        used by :meth:`transform`. It damps the step-to-step jitter of the
        live weights: on DLPFC two seeds agree on the gene-gene similarities
        at r 0.92 with the default 0.998 (500 steps) against 0.84 without
        (docs/design.md §6, "Weight average"). ``0`` switches it off (the
        live weights are used throughout, as in models saved before it).
    refine
        Run the self-paced refinement (Modules II + III). ``False`` is the
        autoencoder-only ablation: the mixture is fitted once at the end.
    scaffold
        Use the image kNN similarity scaffold (graph smoothness term).
    scaffold_k, scaffold_weight
        Neighbours per gene in the scaffold (kNN graph of the correlation of
        smoothed images) and the initial weight of its contrastive smoothness
        term, which decays linearly to 0 at the last epoch.
    scaffold_graph
        How the scaffold finds each gene's neighbours: ``'pca'`` (default),
        cosine on the 50 leading principal axes of the images after the
        encoder's input filter (``input_norm``, ``smooth_sigma``), centred
        and scaled per gene: the truncation drops the pixel noise that no
        other gene shares; ``'box'``, Pearson correlation of the images
        after a 3x3 masked box filter (the default before, with
        ``scaffold_weight=1``). On very small images (about 20 x 20 pixels)
        the PCA graph links noise genes by chance; use
        ``scaffold_graph='box', scaffold_weight=1`` there (docs/design.md §6).
    mixture
        ``'student_t'`` (default) or ``'gaussian'`` (ablation).
    dirichlet_alpha
        Symmetric Dirichlet prior on the mixture weights (>= 1).
    contrastive_weight, mixture_weight, temperature
        Weight of the pseudo-contrastive term, of the mixture likelihood term,
        and the contrastive temperature (of the pseudo-contrastive and
        scaffold terms). 0.1 (before 0.2) gives more pathway-enriched gene
        clusters at coarse resolution and a higher effective rank, at a cost
        in seed-to-seed agreement without the weight average (0.84-0.90 on
        DLPFC, against 0.94 at 0.2; docs/design.md §6, "Temperature"); see
        ``ema_decay``.
    select_start, select_end
        Self-paced kept fraction of each context's most confident genes at the
        first refinement epoch and at the end of the ramp (half of the
        refinement epochs).
    em_iters
        MAP-EM iterations per epoch (warm-started).
    tol
        Stop when fewer than this fraction of genes change hard context
        between epochs (checked after the self-paced ramp).
    amp
        bf16 mixed precision on CUDA (ignored on CPU).
    embed_batch_size
        Genes per inference batch (``transform``, per-epoch embedding).
    invariance_weight, view_temperature, thin_min
        Sampling-noise invariance (part of Module I's training, every epoch):
        two views of each gene made by binomial thinning of its raw counts
        (each count kept with a probability drawn from ``[thin_min, 1]``, the
        library sizes scaled alike) must give the same vector, against every
        other gene as a negative (InfoNCE with temperature
        ``view_temperature``; :func:`sigel.model.refine.view_invariance_loss`).
        The same count-thinned view is what the refinement terms see. Without
        raw counts (multi-sample fits, :meth:`fit_images`) the views are
        pixel-dropout copies. ``invariance_weight=0`` (default) switches the
        term off: on the synthetic tissue it pulled same-family genes apart
        (every other gene is a negative) and lowered the effective rank.
    spread_weight
        Weight of the anti-collapse term (:func:`sigel.model.refine.spread_loss`,
        every epoch): the vectors of each batch keep a spread of at least 1 in
        every dimension and decorrelated dimensions (variance and covariance
        terms as in VICReg), so the space does not fold onto a few directions.
        It acts on the count-thinned view (see above), so that view is also
        what the refinement terms see. ``0`` (default) switches it off. With
        the Gaussian input filter it raised the effective rank of the vectors
        (14-18 to 22-23) and lowered the detection-rate read-out on DLPFC
        151673 / 151675 and the mouse olfactory bulb, but it cut the bulb's
        SVG AUPRC against the SpatialDE calls from 0.15-0.18 to 0.04-0.05
        (``benchmarks/RESULTS.md``, "Representation"), so it stays opt-in.
    denoise
        Module I's denoising variants. ``True``: the masked autoencoder
        reconstructs each gene's image from a count view (its raw counts
        binomially thinned, keep probability from ``[thin_min, 1]``) instead
        of from the image itself, so the vector has to carry the pattern that
        survives a shallower measurement rather than the speckle of this one.
        ``'split'`` (noise2noise): each gene's counts are split at random into
        two disjoint halves (share from ``[thin_min, 1 - thin_min]``) and the
        image of one half is reconstructed from the image of the other; the
        two have independent sampling noise, so only the expression pattern
        is predictable. Both need raw counts (they fall back to the plain
        reconstruction otherwise).
    rarefy
        Depth-matched images (an input transform of Module I). ``'auto'``
        (default; the median total count of the training genes) or a number:
        every time
        the encoder reads a gene, in training and when embedding, it reads a
        fresh *rarefied* draw, the gene's counts binomially thinned to at most
        that many in total (genes with fewer counts are read whole). Genes
        then reach the encoder at a common sampling depth, so how sparse a
        gene is stops being something the vector can tell genes apart by.
        Needs raw counts; single-sample fits only (one process or
        ``torchrun``, which draws exactly what one process draws): a number
        raises elsewhere, ``'auto'`` warns and reads the full images (values
        that are not counts, prebuilt images without counts, several
        samples; the images' ``settings['rarefy_off']`` says why when the
        image builder turned it off). The
        resolved number is an image option (``image_options_['rarefy']``),
        reused by :meth:`transform` and the tasks, so a new sample is read at
        the same depth. ``None``: the encoder reads each gene's full image
        (the earlier default; a faster :meth:`transform`, and vectors
        that read detection rate far more).
    rarefy_draws
        With ``rarefy``: how many draws the final and transformed vectors
        average over (draws seeded 0, 1, ...; more draws, less noise, that
        many times the embedding time).

    Attributes
    ----------
    init_params_ : dict
        The constructor arguments.
    embeddings_ : pandas.DataFrame
        Genes x D (index: gene names; columns ``dim_0..``).
    memberships_ : pandas.DataFrame
        Genes x K soft memberships (columns ``context_0..``; rows sum to 1).
    contexts_ : pandas.DataFrame
        Index genes; ``context`` (int, hard assignment) and ``confidence``
        (its membership).
    history_ : pandas.DataFrame
        One row per epoch: ``epoch``, ``phase`` (``'pretrain'``/``'refine'``),
        ``loss`` (weighted total) and its unweighted terms ``recon``,
        ``scaffold``, ``contrastive``, ``mixture`` (NaN when off),
        ``scaffold_weight``, ``lr``, ``label_change`` (fraction of genes whose
        hard context changed since the previous epoch), ``select_fraction``,
        ``n_selected``, ``n_contexts_used``, ``mixture_log_posterior`` (per
        gene) and ``seconds``.
    mixture_ : sigel.model.MixtureParams
        Fitted mixture (``log_pi``, ``mu``, ``var``, ``nu``).
    images_ : sigel.GeneImages or None
        The training images (``None`` after :meth:`load`).
    graph_ : sigel.model.GeneGraph or None
        The image kNN scaffold used in training.
    stop_reason_ : str
        ``'converged'`` or ``'max_epochs'``.
    epochs_run_ : int
        Epochs run (``<= epochs_``).
    epochs_, pretrain_epochs_, patch_size_, n_contexts_ : int
        The values actually used (``None`` defaults resolved at fit time).
    setup_ : sigel.data.setup.DataSetup
        What the model was fitted on: the AnnData fields it read, the image
        options and a fingerprint of the data (saved with the model). Checks
        new data and gives the image options for :meth:`transform` and the
        tasks.
    image_options_ : dict
        Options to rebuild gene images for :meth:`transform` (a copy of
        ``setup_.image_options``).
    is_trained : bool

    Notes
    -----
    Training: ``pretrain_epochs`` epochs of masked reconstruction plus the
    scaffold term (a contrastive smoothness loss on the kNN graph of the
    smoothed images, weight decaying linearly to 0 at the last epoch), then
    refinement epochs: embed all genes, warm-started MAP-EM (the first time:
    10 k-means++ restarts, the best log posterior kept), self-paced selection
    of each context's most confident genes, and mini-batch steps on
    reconstruction + prototype-contrastive + mixture likelihood + scaffold.
    The refinement terms act on the unmasked embedding of each batch (the
    same view used to cluster), reconstruction on a masked view.

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(200)
    >>> model = sigel.SIGEL(epochs=20).fit(adata)      # doctest: +SKIP
    >>> model.embeddings_.shape                         # doctest: +SKIP
    (200, 32)
    """

    def __init__(
        self,
        *,
        n_contexts: int | None = _D["n_contexts"],
        embed_dim: int = _D["embed_dim"],
        patch_size: int | None = _D["patch_size"],
        max_tokens: int = _D["max_tokens"],
        width: int = _D["width"],
        depth: int = _D["depth"],
        n_heads: int = _D["n_heads"],
        mlp_ratio: float = _D["mlp_ratio"],
        decoder_width: int = _D["decoder_width"],
        patch_stem: bool = _D["patch_stem"],
        mask_ratio: float = _D["mask_ratio"],
        input_norm: str | None = _D["input_norm"],
        smooth_sigma: float = _D["smooth_sigma"],
        recon_loss: str = _D["recon_loss"],
        epochs: int | None = _D["epochs"],
        pretrain_epochs: int | None = _D["pretrain_epochs"],
        batch_size: int = _D["batch_size"],
        lr: float = _D["lr"],
        weight_decay: float = _D["weight_decay"],
        warmup_epochs: int = _D["warmup_epochs"],
        ema_decay: float = _D["ema_decay"],
        refine: bool = _D["refine"],
        scaffold: bool = _D["scaffold"],
        scaffold_k: int = _D["scaffold_k"],
        scaffold_weight: float = _D["scaffold_weight"],
        scaffold_graph: str = _D["scaffold_graph"],
        mixture: str = _D["mixture"],
        dirichlet_alpha: float = _D["dirichlet_alpha"],
        contrastive_weight: float = _D["contrastive_weight"],
        mixture_weight: float = _D["mixture_weight"],
        temperature: float = _D["temperature"],
        select_start: float = _D["select_start"],
        select_end: float = _D["select_end"],
        em_iters: int = _D["em_iters"],
        tol: float = _D["tol"],
        amp: bool = _D["amp"],
        embed_batch_size: int = _D["embed_batch_size"],
        invariance_weight: float = _D["invariance_weight"],
        view_temperature: float = _D["view_temperature"],
        thin_min: float = _D["thin_min"],
        spread_weight: float = _D["spread_weight"],
        denoise: bool = _D["denoise"],
        rarefy: int | str | None = _D["rarefy"],
        rarefy_draws: int = _D["rarefy_draws"],
    ):
        frame = inspect.currentframe()
        args, _, _, values = inspect.getargvalues(frame)
        self.init_params_ = _check_types({a: values[a] for a in args if a != "self"})
        _validate_params(self.init_params_)
        self._reset()

    def _reset(self) -> None:
        self.module_ = None
        self.mixture_model_ = None
        self.embeddings_ = None
        self.memberships_ = None
        self.contexts_ = None
        self.history_ = None
        self.images_ = None
        self.graph_ = None
        self.stop_reason_ = None
        self.epochs_run_ = 0
        self.fit_seconds_ = None
        self.n_contexts_ = None
        self.patch_size_ = None
        self.epochs_ = None
        self.pretrain_epochs_ = None
        self.setup_ = None
        self.fit_params_ = {}
        self.device_ = None

    # ------------------------------------------------------------- properties
    @property
    def image_options_(self) -> dict:
        """Options to rebuild gene images for :meth:`transform` (from ``setup_``; empty before fitting)."""
        return {} if self.setup_ is None else self.setup_.options()

    @property
    def is_trained(self) -> bool:
        """Whether the model has been fitted (or loaded)."""
        return self.module_ is not None and self.embeddings_ is not None

    @property
    def mixture_(self):
        """Fitted mixture parameters (:class:`sigel.model.MixtureParams`)."""
        return None if self.mixture_model_ is None else self.mixture_model_.params

    @property
    def embed_dim(self) -> int:
        """Dimension D of the gene vectors."""
        return int(self.init_params_["embed_dim"])

    def _require_trained(self, what: str) -> None:
        if not self.is_trained:
            raise SigelInputError(f"this SIGEL model is not trained; call `fit()` (or `SIGEL.load()`) before `{what}`")

    def __repr__(self) -> str:
        p = self.init_params_
        if not self.is_trained:
            k = p["n_contexts"] if p["n_contexts"] is not None else "auto"
            e = p["epochs"] if p["epochs"] is not None else "auto"
            return (f"SIGEL(untrained; D={p['embed_dim']}, K={k}, epochs<={e}, "
                    f"refine={p['refine']}, scaffold={p['scaffold']}, mixture={p['mixture']!r})")
        return (f"SIGEL: {len(self.embeddings_):,} genes x {self.embed_dim} dims, K={self.n_contexts_} contexts; "
                f"{self.epochs_run_} epochs ({self.stop_reason_}); patch {self.patch_size_}, "
                f"width {p['width']}, depth {p['depth']}; refine={p['refine']}, scaffold={p['scaffold']}, "
                f"mixture={p['mixture']!r}")

    # ---------------------------------------------------------------- builders
    def _build_module(self, patch_size: int):
        from .model.mae import MaskedAutoencoder

        p = self.init_params_
        return MaskedAutoencoder(
            patch_size=patch_size, width=p["width"], depth=p["depth"], n_heads=p["n_heads"],
            mlp_ratio=p["mlp_ratio"], embed_dim=p["embed_dim"], decoder_width=p["decoder_width"],
            mask_ratio=p["mask_ratio"], input_norm=None if p["input_norm"] == "none" else p["input_norm"],
            smooth_sigma=p["smooth_sigma"], recon_loss=p["recon_loss"], patch_stem=bool(p["patch_stem"]),
        )

    def _build_mixture(self, n_contexts: int, seed: int):
        from .model.mixture import StudentTMixture

        p = self.init_params_
        return StudentTMixture(n_contexts, kind=p["mixture"], dirichlet_alpha=p["dirichlet_alpha"],
                               n_iter=p["em_iters"], seed=seed)

    def resolve_epochs(self, n_genes: int) -> tuple[int, int]:
        """The ``(epochs, pretrain_epochs)`` used for ``n_genes`` genes (resolving ``None`` defaults).

        ``epochs=None`` gives about 4,000 gradient steps (``4000 * batch_size /
        n_genes`` epochs) bounded to [16, 60]; ``pretrain_epochs=None`` half
        of the epochs.
        """
        p = self.init_params_
        if p["epochs"] is not None:
            epochs = int(p["epochs"])
        else:
            steps_per_epoch = max(math.ceil(n_genes / p["batch_size"]), 1)
            epochs = int(min(max(round(4000 / steps_per_epoch), 16), 60))
        pre = epochs // 2 if p["pretrain_epochs"] is None else min(int(p["pretrain_epochs"]), epochs)
        return epochs, pre

    def _train_config(self, n_genes: int):
        from .train.trainer import TrainConfig

        p = self.init_params_
        epochs, pre = self.resolve_epochs(n_genes)
        return TrainConfig(
            epochs=epochs, pretrain_epochs=pre, batch_size=p["batch_size"],
            embed_batch_size=p["embed_batch_size"], lr=p["lr"],
            weight_decay=p["weight_decay"], warmup_epochs=p["warmup_epochs"], mask_ratio=p["mask_ratio"],
            refine=bool(p["refine"]), scaffold=bool(p["scaffold"]), scaffold_k=p["scaffold_k"],
            scaffold_weight=p["scaffold_weight"], scaffold_graph=p["scaffold_graph"],
            contrastive_weight=p["contrastive_weight"],
            mixture_weight=p["mixture_weight"], temperature=p["temperature"], select_start=p["select_start"],
            select_end=p["select_end"], em_iters=p["em_iters"], tol=p["tol"], amp=bool(p["amp"]),
            invariance_weight=p["invariance_weight"], view_temperature=p["view_temperature"],
            thin_min=p["thin_min"], spread_weight=p["spread_weight"], denoise=_denoise(p["denoise"]),
            rarefy_draws=p["rarefy_draws"], ema_decay=p["ema_decay"],
        )

    # --------------------------------------------------------------------- fit
    def fit(self, adata, *, layer: str | None = None, spatial_key: str = "spatial",
            library_size_key: str | None = None, genes=None, device: str = "auto", seed: int | None = None,
            progress: bool | None = None, n_threads: int | None = None, sample_names=None, out_file=None,
            checkpoint_dir=None, checkpoint_every: int = 1, resume: bool = False, **image_options) -> "SIGEL":
        """Build gene images from an AnnData (or several samples) and train.

        ``adata`` is never modified; use :meth:`write_to` (or :func:`embed`)
        to store the results in it.

        Under ``torchrun`` (``WORLD_SIZE > 1``) every process runs this same
        call and the work is split across them (data-parallel training, see
        :mod:`sigel.train.distributed`); every rank ends with the full results.

        Parameters
        ----------
        adata
            AnnData, spots/cells x genes, raw counts in ``X`` or ``layers[layer]``,
            coordinates as :meth:`sigel.GeneImages.from_anndata` reads them.
            A list (or dict ``{name: AnnData}``) of several samples trains one
            model on all of them (each on its own grid, one shared space); the
            results are then indexed by a ``(sample, gene)``
            :class:`pandas.MultiIndex`.
        layer
            Layer with the counts (default ``X``).
        spatial_key
            ``obsm`` key with coordinates.
        library_size_key
            ``obs`` column with each spot's library size (e.g. ``'sum_umi'``).
        genes
            Optional subset of genes to embed (names).
        device
            ``'auto'`` (CUDA, then MPS, then CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'``.
        seed
            Random seed, an integer in ``[0, 2**32)`` (``None``:
            ``sigel.settings.seed``). On CPU the same seed gives bitwise
            identical results for a fixed thread count (``n_threads``);
            different thread counts change the floating-point summation order
            (1 vs 2 threads differ at about 1e-5). The fit draws from its own
            seeded generators: the global ``random``, ``numpy.random`` and
            torch generators are left as they were.
        progress
            Show a progress bar (``None``: ``sigel.settings.show_progress()``).
        n_threads
            Torch CPU threads during the fit (``None``: ``sigel.settings.n_threads``,
            else ``SIGEL_NUM_THREADS`` / ``OMP_NUM_THREADS``, else the CPUs this
            process may use minus those busy with other work; see
            :func:`sigel._settings.resolve_threads`).
        sample_names
            Names of the samples when ``adata`` is a list (one per AnnData,
            unique; default ``sample_0, sample_1, ...``). Must be ``None`` for
            a single AnnData or a dict.
        out_file
            Optional HDF5 file for the per-gene results
            (:func:`sigel.io.results.write_results_h5`); written by rank 0
            only under ``torchrun``.
        checkpoint_dir
            Folder for a training checkpoint (``checkpoint.pt``), saved every
            ``checkpoint_every`` epochs (one process, one sample; not under
            ``torchrun``). A folder that already holds a checkpoint is refused
            unless ``resume=True``.
        checkpoint_every
            Epochs between checkpoints.
        resume
            Continue from the checkpoint in ``checkpoint_dir`` (a fresh start
            when there is none yet). With the same data, options, seed and
            thread count the result is bitwise that of an uninterrupted fit;
            other data, options or seed are refused.
        **image_options
            Passed to :meth:`sigel.GeneImages.from_anndata` (``geometry``,
            ``resolution``, ``normalize``, ``log1p``, ``scale``, ``min_spots``, ...).
            They are saved and reused by :meth:`transform`.

        Returns
        -------
        SIGEL
            ``self``, fitted.

        Raises
        ------
        SigelInputError
            Invalid inputs, e.g. ``sample_names`` of the wrong length or with
            duplicates.
        """
        as_seed("seed", seed)
        if n_threads is not None and as_int("n_threads", n_threads) < 1:
            raise SigelInputError(f"`n_threads` must be >= 1; got {n_threads!r}")
        resolve_device(device)
        opts = dict(layer=layer, genes=genes, spatial_key=spatial_key, library_size_key=library_size_key,
                    **image_options)
        rarefy = self.init_params_["rarefy"]
        several = isinstance(adata, (list, tuple, dict)) and len(adata) > 1
        if rarefy == "auto" and "rarefy" not in opts and several:
            rarefy_off("depth-matched draws are for single-sample fits (this fit has several samples)", stacklevel=3)
            rarefy = None
        if rarefy is not None:
            opts.setdefault("rarefy", rarefy)
        if isinstance(adata, (list, tuple, dict)):
            from .data.multisample import SampleImages, normalize_samples

            adatas, names = normalize_samples(adata, sample_names)
            images = SampleImages([GeneImages.from_anndata(a, **opts) for a in adatas], names)
        else:
            if sample_names is not None:
                raise SigelInputError("`sample_names` is only for several samples (a list of AnnData); "
                                      "got a single AnnData")
            images = GeneImages.from_anndata(adata, **opts)
        views = self._count_views(adata, images)
        fit_params = dict(layer=layer, spatial_key=spatial_key, library_size_key=library_size_key)
        requested = {**image_options}
        self.fit_images(images, device=device, seed=seed, progress=progress, n_threads=n_threads,
                        out_file=out_file, views=views, checkpoint_dir=checkpoint_dir,
                        checkpoint_every=checkpoint_every, resume=resume)
        self.setup_ = DataSetup.from_images(images, **fit_params, geometry=requested.get("geometry", "auto"))
        self.fit_params_ = _jsonable(fit_params)
        return self

    def _count_views(self, adata, images):
        """Count-thinning views for the invariance term (``None`` when off or not raw counts)."""
        p = self.init_params_
        if isinstance(images, GeneImages) and (p["invariance_weight"] > 0 or p["spread_weight"] > 0
                                                 or p["denoise"]):
            from .data.views import CountViews

            try:
                return CountViews.from_anndata(adata, images)
            except SigelInputError as e:
                logger.warning("sampling-noise views fall back to pixel dropout: %s", e)
        return None

    def fit_images(self, images, *, device: str = "auto", seed: int | None = None,
                   progress: bool | None = None, n_threads: int | None = None, out_file=None,
                   views=None, checkpoint_dir=None, checkpoint_every: int = 1, resume: bool = False) -> "SIGEL":
        """Train on prebuilt gene images.

        Parameters
        ----------
        images
            :class:`sigel.GeneImages` (e.g. from a bridge or a distributed
            loader), or :class:`sigel.data.multisample.SampleImages` for a
            multi-sample fit (results indexed by ``(sample, gene)``).
        device, seed, progress, n_threads, out_file, checkpoint_dir, checkpoint_every, resume
            As in :meth:`fit`.
        views
            Optional :class:`sigel.data.views.CountViews` of ``images`` (raw
            counts for binomially thinned views; :meth:`fit` makes it).

        Returns
        -------
        SIGEL
            ``self``, fitted.
        """
        import torch

        from .train.distributed import setup_distributed

        G, K = _genes_and_contexts(images, self.init_params_["n_contexts"])
        seed, checkpoint_every = _check_fit_options(seed, n_threads, checkpoint_every, resume, checkpoint_dir)
        dev = resolve_device(device)
        dist_setup = setup_distributed(dev)  # None unless launched by torchrun with several processes
        comm = None
        if dist_setup is not None:
            comm, dev = dist_setup
            seed = comm.broadcast_object(seed)  # every rank must use the same seed
        checkpoint = _checkpointer(images, comm, checkpoint_dir, checkpoint_every, resume, seed)
        old_threads = torch.get_num_threads()
        n_used = set_threads(n_threads)
        t0 = time.perf_counter()
        try:
            with seeded(seed, dev):  # global generators are seeded inside and restored afterwards
                patch = _patch_size_for(images, self.init_params_)
                module = self._build_module(patch)
                mixture = self._build_mixture(K, seed + 2)
                trainer = self._make_trainer(module, mixture, images, device=dev, seed=seed, progress=progress,
                                             comm=comm, checkpoint=checkpoint, views=views)
                logger.info("training on %s: %d genes, %dx%d images, patch %d, K=%d, %d threads%s", dev, G,
                            images.height, images.width, patch, K, n_used,
                            "" if comm is None else f", {comm.world_size} processes")
                result = trainer.fit()
        finally:
            if torch.get_num_threads() != old_threads:
                torch.set_num_threads(old_threads)
        self._store_fit(trainer, mixture, result, images, device=dev, patch=patch, n_contexts=K, t0=t0)
        if out_file is not None:
            _write_out_file(self, out_file, comm)
        return self

    def _make_trainer(self, module, mixture, images, *, device, seed, progress, comm, checkpoint, views):
        """The fit's trainer: data-parallel under torchrun or for several samples, else the plain one."""
        from .data.multisample import SampleImages
        from .data.views import rarefied
        from .train.distributed import DistributedTrainer
        from .train.trainer import Trainer

        _check_rarefied_fit(images, self.init_params_["rarefy"])
        G = images.n_genes
        cb = getattr(self, "_callback", None)
        train_images = images
        if isinstance(images, SampleImages) and images.n_samples == 1 and comm is None:
            train_images = images.samples[0]  # one sample, one process: exactly the plain fit
        train_images = rarefied(train_images, seed + 3)  # depth-matched draws when built with `rarefy`
        if comm is not None or isinstance(train_images, SampleImages):
            from .train.distributed import Comm

            return DistributedTrainer(module, mixture, train_images, self._train_config(G), device=device,
                                      seed=seed, progress=progress, callback=cb,
                                      comm=comm or Comm.single(), views=views)
        return Trainer(module, mixture, train_images, self._train_config(G), device=device, seed=seed,
                       progress=progress, callback=cb, checkpoint=checkpoint, views=views)

    def _store_fit(self, trainer, mixture, result, images, *, device, patch: int, n_contexts: int, t0: float) -> None:
        """Keep a finished fit's network, mixture, settings and results on the model."""
        G, K = images.n_genes, n_contexts
        self.module_ = trainer.model.eval()
        self.mixture_model_ = mixture
        self.device_ = str(device)
        self.patch_size_ = patch
        self.n_contexts_ = K
        self.epochs_, self.pretrain_epochs_ = self.resolve_epochs(G)
        self.images_ = images
        self.graph_ = result.graph
        self.stop_reason_ = result.stop_reason
        self.epochs_run_ = result.epochs_run
        self.fit_seconds_ = time.perf_counter() - t0
        self.history_ = pd.DataFrame(result.history)
        self.setup_ = DataSetup.from_images(images, geometry="auto")
        self.fit_params_ = {}
        self._set_results(images.genes, result.embeddings, result.memberships)
        logger.info("%d epochs (%s), %s genes x %d dims, K=%d contexts, %.1f s", self.epochs_run_,
                    self.stop_reason_, f"{G:,}", self.embed_dim, K, self.fit_seconds_)

    @property
    def sample_names_(self) -> list | None:
        """Sample names of a multi-sample fit (``None`` for a single sample)."""
        if self.embeddings_ is None or not isinstance(self.embeddings_.index, pd.MultiIndex):
            return None
        return list(self.embeddings_.index.get_level_values("sample").unique())

    def _set_results(self, genes, emb: np.ndarray, resp: np.ndarray) -> None:
        genes = _gene_index(genes)
        self.embeddings_ = pd.DataFrame(np.asarray(emb, dtype=np.float32), index=genes,
                                        columns=[f"dim_{i}" for i in range(emb.shape[1])])
        self.memberships_ = self._memberships_frame(resp, genes)
        self.contexts_ = self._contexts_frame(self.memberships_)

    @staticmethod
    def _memberships_frame(resp, genes) -> pd.DataFrame:
        r = np.asarray(resp, dtype=np.float64)
        r = np.clip(r, 0.0, None)
        r = r / np.clip(r.sum(1, keepdims=True), 1e-300, None)
        return pd.DataFrame(r, index=_gene_index(genes), columns=[f"context_{k}" for k in range(r.shape[1])])

    @staticmethod
    def _contexts_frame(memberships: pd.DataFrame) -> pd.DataFrame:
        r = memberships.to_numpy()
        return pd.DataFrame({"context": r.argmax(1).astype(np.int64), "confidence": r.max(1)},
                            index=memberships.index)

    # --------------------------------------------------------------- inference
    def embed_images(self, images: GeneImages, *, batch_size: int | None = None, device=None,
                     draws: int | str | None = None) -> np.ndarray:
        """Embed the genes of prebuilt images with the trained encoder (no decoder, no grad).

        Parameters
        ----------
        images
            :class:`sigel.GeneImages`, any grid (positions are rebuilt for it).
        batch_size
            Genes per forward pass (default ``embed_batch_size``).
        device
            Torch device (default: where the model is).
        draws
            For a model that reads depth-matched draws (``rarefy``): how many
            draws to average per gene (default ``rarefy_draws``). More draws
            give vectors with less sampling noise and cost one encoder pass
            each for genes deeper than the common depth. ``'depth'``: as
            many draws as each gene's counts hold (a gene ``k`` times deeper
            than the common depth gets ``k``), at least ``rarefy_draws`` and
            at most ``8 * rarefy_draws``
            (:meth:`~sigel.data.views.RarefiedImages.draws_by_depth`); this
            spends the encoder passes where the counts are. Ignored by a
            model that reads whole images.

        Returns
        -------
        numpy.ndarray
            ``(images.n_genes, D)`` float32, rows in ``images.genes`` order.
        """
        import torch

        from .data.views import rarefied
        from .train.trainer import embed_draws

        self._require_trained("embed_images")
        if not isinstance(images, GeneImages):
            raise SigelInputError(f"`images` must be a sigel.GeneImages; got {type(images).__name__}")
        if self.image_options_.get("rarefy") is not None:  # the model, not the images, says how to read them
            if images.counts is None:
                raise SigelInputError(
                    "this model reads depth-matched draws of the counts (rarefy="
                    f"{self.image_options_['rarefy']}); build the images with the model's options "
                    "(`model.images_for(adata)`), which keep the counts")
            images = rarefied(images)
        dev = torch.device(device) if device is not None else next(self.module_.parameters()).device
        if dev != next(self.module_.parameters()).device:
            self.module_.to(dev)
        bs = int(batch_size or self.init_params_["embed_batch_size"])
        n_draws = self.draws_per_gene(draws) or 1
        if n_draws == "depth":  # per gene, from its depth (images that make no draws are read once)
            r = int(self.init_params_["rarefy_draws"])
            n_draws = images.draws_by_depth(r, DEPTH_DRAWS_MAX * r) if getattr(images, "draws", False) else 1
        with thread_scope():
            Z = embed_draws(self.module_, images, n_draws, batch_size=bs,
                            device=dev, amp=bool(self.init_params_["amp"]))
        return Z.cpu().numpy().astype(np.float32)

    def draws_per_gene(self, draws: int | str | None = None) -> int | str | None:
        """How many depth-matched draws :meth:`embed_images` averages per gene.

        ``draws`` (a positive whole number, or ``'depth'``: per gene, from its
        depth) when given, else ``rarefy_draws``; ``None`` for a model that
        reads whole images (``rarefy=None``).
        """
        if isinstance(draws, str):
            assert_one_of("draws", draws, ("depth",))
            return None if self.image_options_.get("rarefy") is None else draws
        n = as_int("draws", draws, allow_none=True)
        if n is not None:
            assert_positive("draws", n)
        if self.image_options_.get("rarefy") is None:
            return None
        return int(self.init_params_["rarefy_draws"]) if n is None else n

    def transform(self, adata_or_images, *, genes=None, batch_size: int | None = None, device=None,
                  draws: int | str | None = None, **image_options) -> pd.DataFrame:
        """Embed the genes of a new AnnData (or of prebuilt images) without retraining.

        Images are rebuilt with the options saved at fit time (normalisation,
        scaling, layer, library-size column ...) on the new sample's own grid;
        ``geometry`` is re-detected unless given.

        Parameters
        ----------
        adata_or_images
            AnnData (new genes, or a new sample) or :class:`sigel.GeneImages`.
        genes
            Optional subset of genes (names).
        batch_size
            Genes per forward pass.
        device
            Torch device (default: where the model is).
        draws
            For a model that reads depth-matched draws: how many to average
            per gene (:meth:`embed_images`; default ``rarefy_draws``, which
            is what ``fit`` used, so the training genes get back their fitted
            vectors). Fewer draws are faster and noisier: on DLPFC 151673
            (8,325 genes, 2 threads) 1 draw ran at about 2,700 genes/s and
            2 at about 1,900, against 1,200-1,400 for 4, and 1-draw vectors
            agreed with the 4-draw ones at r = 0.92-0.94 on 151673 and 151675
            (gene-gene cosines; benchmarks/RESULTS.md).
        **image_options
            Overrides of the saved image options (e.g. ``library_size_key=None``
            for a sample without that column).

        Returns
        -------
        pandas.DataFrame
            Genes x D (index gene names, columns ``dim_0..``). Genes removed by
            the image filters (``min_spots``, ``exclude_prefixes``) are absent.
        """
        self._require_trained("transform")
        images = self.images_for(adata_or_images, genes=genes, **image_options)
        Z = self.embed_images(images, batch_size=batch_size, device=device, draws=draws)
        return pd.DataFrame(Z, index=pd.Index(images.genes, name="gene"),
                            columns=[f"dim_{i}" for i in range(Z.shape[1])])

    def images_for(self, adata_or_images, *, genes=None, **image_options) -> GeneImages:
        """The gene images of new data, built as at fit time (the first step of :meth:`transform`).

        An AnnData is imaged with the options saved at fit time (``image_options``
        override them), after ``setup_`` has checked that it has the fields
        they name; a library-size column missing from the new data falls back
        to the row sums, with a warning. Prebuilt `GeneImages` are used as
        given (subset to ``genes``).
        """
        if isinstance(adata_or_images, GeneImages):
            return adata_or_images if genes is None else adata_or_images.subset(genes)
        self._require_trained("images_for")
        opts = self.setup_.for_data(adata_or_images, image_options)
        return GeneImages.from_anndata(adata_or_images, genes=genes, **opts)

    def predict_memberships(self, embeddings) -> pd.DataFrame:
        """Soft context memberships of (new) embeddings under the fitted mixture.

        Parameters
        ----------
        embeddings
            DataFrame (genes x D, e.g. from :meth:`transform`) or array ``(n, D)``.

        Returns
        -------
        pandas.DataFrame
            ``(n, K)``, columns ``context_0..``; rows sum to 1.
        """
        import torch

        self._require_trained("predict_memberships")
        if isinstance(embeddings, pd.DataFrame):
            index, arr = embeddings.index, embeddings.to_numpy(np.float32)
        else:
            arr = np.asarray(embeddings, dtype=np.float32)
            index = pd.RangeIndex(arr.shape[0])
        if arr.ndim != 2 or arr.shape[1] != self.embed_dim:
            raise SigelInputError(f"embeddings must have shape (n, {self.embed_dim}); got {arr.shape}")
        dev = self.mixture_model_.params.mu.device
        with torch.no_grad():
            r = self.mixture_model_.predict_proba(torch.from_numpy(arr).to(dev))
        return self._memberships_frame(r.double().cpu().numpy(), index)

    # ------------------------------------------------------------ AnnData I/O
    def write_to(self, adata, *, key_added: str = "sigel", sample: str | None = None) -> "SIGEL":
        """Store the results in ``adata`` (scanpy style); returns the model.

        Genes are matched by name. Genes of ``adata`` that were not embedded
        (filtered out or not requested) get NaN rows / missing values.

        Parameters
        ----------
        adata
            AnnData whose ``var_names`` include the embedded genes.
        key_added
            Prefix of the keys written.
        sample
            For a multi-sample model (required there): the name of the sample
            ``adata`` holds; its rows of the results are written. Must be
            ``None`` for a single-sample model.

        Returns
        -------
        SIGEL
            ``self``. Sets:

            - ``adata.varm[key_added]``: ``(n_vars, D)`` float32 embeddings (NaN
              rows for genes not embedded);
            - ``adata.varm[key_added + '_contexts']``: ``(n_vars, K)`` memberships;
            - ``adata.var[key_added + '_context']``: nullable ``Int64`` hard context;
            - ``adata.var[key_added + '_confidence']``: float, its membership;
            - ``adata.uns[key_added]``: dict with ``params`` (constructor
              arguments; those left at ``None`` are omitted), ``resolved``
              (``epochs``, ``pretrain_epochs``, ``patch_size``,
              ``n_contexts`` actually used), ``image_options``, ``history``
              (dict of lists), ``stop_reason``, ``epochs_run``,
              ``n_contexts``, ``n_genes``, ``mixture`` (``log_pi``, ``mu``,
              ``var``, ``nu`` arrays) and ``version``.
        """
        return write_to_anndata(self, adata, key_added=key_added, sample=sample)

    # ------------------------------------------------------------ persistence
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Save to a directory: ``config.json`` + ``weights.safetensors`` (no pickles) + a manifest.

        The manifest (``sigel-manifest.json``, written last) lists the files
        the model wrote with their SHA-256; :meth:`load` checks them, so a
        directory whose save was interrupted is refused rather than loaded
        with mismatched parts.

        Parameters
        ----------
        path
            Directory to create (or an existing empty one).
        overwrite
            Replace a model saved there before. Only the files listed in its
            manifest (or, for a model saved without one, its ``config.json``
            and ``weights.safetensors``) are replaced; nothing else in the
            directory is removed. A non-empty directory that does not hold a
            saved SIGEL model is refused.

        Returns
        -------
        pathlib.Path
            The directory.
        """
        # the manifest writer is looked up here, so that replacing `sigel._model._write_manifest` takes effect
        return save_model(self, path, overwrite=overwrite, write_manifest=_write_manifest)

    @classmethod
    def load(cls, path, *, device: str = "cpu") -> "SIGEL":
        """Load a model saved with :meth:`save` (whatever device it was trained on).

        Parameters
        ----------
        path
            The directory.
        device
            Where to put the weights (default CPU; ``'auto'`` allowed).

        Returns
        -------
        SIGEL
            A trained model (``images_`` and ``graph_`` are ``None``).

        Raises
        ------
        SigelInputError
            Missing, corrupt or foreign directory, naming the problem.
        """
        return load_model(path, model_class=cls, device=device)


def embed(adata, *, key_added: str = "sigel", layer: str | None = None, spatial_key: str = "spatial",
          library_size_key: str | None = None, genes=None, device: str = "auto", seed: int | None = None,
          progress: bool | None = None, n_threads: int | None = None, image_options: dict | None = None,
          **hyperparameters) -> SIGEL:
    """Fit a :class:`SIGEL` model on ``adata`` and write the results into it (scanpy style).

    Parameters
    ----------
    adata
        AnnData (spots x genes, counts). Results are added to it (see
        :meth:`SIGEL.write_to`); nothing else is changed.
    key_added
        Prefix of the keys written.
    layer, spatial_key, library_size_key, genes, device, seed, progress, n_threads
        As in :meth:`SIGEL.fit`.
    image_options
        Extra :meth:`sigel.GeneImages.from_anndata` options.
    **hyperparameters
        :class:`SIGEL` constructor arguments.

    Returns
    -------
    SIGEL
        The fitted model. Sets ``adata.varm[key_added]``,
        ``adata.varm[key_added + '_contexts']``, ``adata.var[key_added +
        '_context']``, ``adata.var[key_added + '_confidence']`` and
        ``adata.uns[key_added]``.
    """
    model = SIGEL(**hyperparameters)
    model.fit(adata, layer=layer, spatial_key=spatial_key, library_size_key=library_size_key, genes=genes,
              device=device, seed=seed, progress=progress, n_threads=n_threads, **(image_options or {}))
    return model.write_to(adata, key_added=key_added)
