"""Imputing genes missing from a targeted (imaging) panel from a full-coverage sample.

SIGEL embeddings are learned on a full-coverage (sequencing) reference. A
generator turns a gene's embedding into its image on the *target* geometry
(the panel sample's own grid, or its rasterised free coordinates); it is
trained on the genes both samples measure and then asked for the genes the
panel lacks. By default it refines a prior image read from a bank of the
measured genes' images (weighted by embedding similarity at a learned
temperature). A conditional (projection) discriminator keeps the generated
images realistic, a memory bank of learned feature prototypes stabilises the
generator (:mod:`sigel.model.generator`), and the reference encoder may be
fine-tuned during the adversarial training.

Baselines: ``method='knn'`` (the similarity-weighted mean of the target
images of a gene's nearest measured genes in embedding space) and
``method='mean'`` (the mean image of all measured genes).

Metrics follow Li et al. 2022 (Nat Methods 19:662, "Benchmarking spatial and
single-cell transcriptomics integration methods ..."): PCC on the values as
given, SSIM on max-scaled values, RMSE on z-scored values, Jensen-Shannon
divergence on sum-scaled values, and the rank-based accuracy score (AS).

Value scale
-----------
All values (imputed and measured) are on the scale of the target's gene
images (:class:`sigel.GeneImages`, built with the reference model's
normalisation settings): library-size normalised, ``log1p``, divided by each
gene's 0.99 in-tissue pixel quantile and clipped to ``[0, 1]``. Values are
read back from the image at each cell's / spot's pixel; on grid and Visium
geometries every spot owns its pixel (the spot's own value), on free
coordinates the pixel holds the mean of the cells that fall into it.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._settings import logger, resolve_device, set_threads, settings
from .._validate import SigelInputError, assert_in_range, assert_one_of, assert_positive
from ..data import GeneImages
from ._model import setup_options

__all__ = ["impute", "impute_cv", "impute_metrics", "impute_summary"]

METHODS = ("gan", "knn", "mean")
KEY = "sigel_impute"
_NORM_KEYS = ("normalize", "log1p", "scale", "scale_quantile")


# =========================================================================== inputs
def _embedding_frame(model) -> pd.DataFrame:
    if isinstance(model, pd.DataFrame):
        emb = model
    elif hasattr(model, "embeddings_"):
        emb = getattr(model, "embeddings_", None)
        if emb is None or not getattr(model, "is_trained", True):
            raise SigelInputError("the SIGEL model is not fitted; call `sigel.SIGEL(...).fit(reference)` first")
    else:
        raise SigelInputError(
            "`model` must be a fitted sigel.SIGEL (fitted on the full-coverage reference) or a genes x D "
            f"embedding DataFrame; got {type(model).__name__}"
        )
    emb = pd.DataFrame(np.asarray(emb, dtype=np.float64), index=pd.Index(emb.index.astype(str)))
    if emb.shape[0] < 2:
        raise SigelInputError(f"need at least 2 embedded genes; got {emb.shape[0]}")
    if not np.all(np.isfinite(emb.to_numpy())):
        raise SigelInputError("the embedding contains NaN or infinite values")
    return emb


def _upper_lookup(names: pd.Index, what: str) -> pd.Series:
    """Upper-case name -> original name (first occurrence; duplicates reported)."""
    up = pd.Index(names.astype(str)).str.upper()
    dup = up.duplicated()
    if dup.any():
        logger.warning(f"{what}: {int(dup.sum())} gene names differ only by case; the first of each is used "
                       f"(e.g. {list(names[dup][:3])})")
    return pd.Series(np.asarray(names)[~dup], index=up[~dup])


class _Problem:
    """Everything an imputation run needs, prepared once (target images, name matching, embeddings)."""

    def __init__(self, model, target, *, layer, spatial_key, library_size_key, geometry, resolution,
                 min_cells, reference_images=None, counts=True):
        emb = _embedding_frame(model)
        self.model = model
        if reference_images is None:
            reference_images = getattr(model, "images_", None)
        if reference_images is not None and not isinstance(reference_images, GeneImages):
            raise SigelInputError(f"`reference_images` must be a sigel.GeneImages; got {type(reference_images).__name__}")
        self.ref_images = reference_images
        self.emb = emb
        Z = emb.to_numpy()
        self.emb_mean = Z.mean(0)
        sd = Z.std(0)
        self.emb_sd = np.where(sd > 1e-12, sd, 1.0)
        self.Zs = pd.DataFrame((Z - self.emb_mean) / self.emb_sd, index=emb.index)

        ref_settings = {}
        ref_images = reference_images
        src = ref_images.settings if ref_images is not None else setup_options(model)
        if isinstance(src, dict):
            ref_settings = {k: src[k] for k in _NORM_KEYS if k in src}
        if not hasattr(target, "var_names") or not hasattr(target, "obs"):
            raise SigelInputError(f"`target_adata` must be an AnnData; got {type(target).__name__}")
        self.images = GeneImages.from_anndata(
            target, layer=layer, geometry=geometry, spatial_key=spatial_key,
            library_size_key=library_size_key, resolution=resolution, patch_size=1, min_spots=0, counts=counts,
            exclude_prefixes=(), **ref_settings,
        )
        self.target = target

        # ---- match measured genes to embedded genes (case-insensitive) ----
        ref_up = _upper_lookup(emb.index, "reference model")
        tgt_genes = self.images.genes
        tgt_up = tgt_genes.str.upper()
        in_ref = tgt_up.isin(ref_up.index)
        self.unmatched = tgt_genes[~in_ref].tolist()
        matched = pd.Series(ref_up.reindex(tgt_up[in_ref]).to_numpy(), index=tgt_genes[in_ref])
        matched = matched[~pd.Index(matched.to_numpy()).duplicated()]
        self.ref_of = matched  # target name -> reference name
        self.measured_up = set(tgt_up)
        self.ref_up = ref_up

        sv = self.images.spot_values()
        n_det = np.diff(sp.csr_matrix(sv > 0).indptr)
        det = pd.Series(n_det, index=tgt_genes)
        ok = det.reindex(matched.index).to_numpy() >= min_cells
        self.shared = pd.Index(matched.index[ok])  # target names usable for training
        n_low = int((~ok).sum())
        if self.unmatched:
            logger.warning(f"impute: {len(self.unmatched)} of {len(tgt_genes)} measured genes have no embedding in "
                           f"the reference model (e.g. {self.unmatched[:5]}); they are kept as measured genes "
                           "but do not train the generator")
        if n_low:
            logger.info(f"impute: {n_low} shared genes detected in fewer than {min_cells} target cells are not "
                        "used for training")
        if len(self.shared) < 2:
            raise SigelInputError(
                f"only {len(self.shared)} measured genes of the target match the reference model's genes "
                f"(case-insensitive; e.g. target {tgt_genes[:3].tolist()} vs reference {emb.index[:3].tolist()}); "
                "need at least 2 to train the generator"
            )

    def z(self, target_names=None, ref_names=None) -> np.ndarray:
        """Standardised embeddings of target-named shared genes or reference-named genes."""
        names = self.ref_of.reindex(target_names).to_numpy() if target_names is not None else ref_names
        return self.Zs.loc[list(names)].to_numpy(np.float32)

    def resolve_query(self, genes):
        """Split requested genes into (reference names to impute, target names measured)."""
        if genes is None:
            ref = self.emb.index[~self.emb.index.str.upper().isin(self.measured_up)]
            return pd.Index(ref), pd.Index([])
        genes = pd.Index([str(g) for g in np.atleast_1d(np.asarray(genes, dtype=object))])
        up = genes.str.upper()
        measured = up.isin(self.measured_up)
        tgt_up = pd.Series(self.images.genes, index=self.images.genes.str.upper())
        tgt_up = tgt_up[~tgt_up.index.duplicated()]
        meas_names = pd.Index(tgt_up.reindex(up[measured]).to_numpy())
        cand = up[~measured]
        known = cand.isin(self.ref_up.index)
        if not known.all():
            bad = genes[~measured][~known]
            raise SigelInputError(
                f"{len(bad)} requested genes are neither measured in the target nor embedded by the reference "
                f"model, so they cannot be imputed: {bad[:10].tolist()}"
            )
        ref_names = pd.Index(self.ref_up.reindex(cand).to_numpy()).unique()
        return ref_names, meas_names.unique()


# =========================================================================== predictors
def _cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    a = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    b = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def _neighbours(Zq: np.ndarray, Zt: np.ndarray, k: int, chunk: int = 2048):
    """Top-k cosine neighbours of each query among training genes: (indices (q, k), similarities (q, k))."""
    k = int(min(k, Zt.shape[0]))
    idx = np.empty((Zq.shape[0], k), dtype=np.int64)
    sim = np.empty((Zq.shape[0], k), dtype=np.float64)
    for s in range(0, Zq.shape[0], chunk):
        S = _cosine(Zq[s:s + chunk], Zt)
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(S, part, 1)
        o = np.argsort(-ps, axis=1)
        idx[s:s + chunk] = np.take_along_axis(part, o, 1)
        sim[s:s + chunk] = np.take_along_axis(ps, o, 1)
    return idx, sim


def _neighbour_weights(idx: np.ndarray, sim: np.ndarray, n_train: int) -> sp.csr_matrix:
    """Sparse (queries x training genes) weights: similarities clipped at 0, rows summing to 1 (uniform if all 0)."""
    w = np.clip(sim, 0.0, None)
    w[w.sum(1) <= 0] = 1.0
    w = w / w.sum(1, keepdims=True)
    q, kk = idx.shape
    return sp.csr_matrix((w.ravel(), (np.repeat(np.arange(q), kk), idx.ravel())), shape=(q, n_train))


def _loo_knn_weights(Zt: np.ndarray, k: int) -> sp.csr_matrix | None:
    """Leave-one-out kNN weights of the training genes among themselves (``None`` with fewer than 2 genes)."""
    n = Zt.shape[0]
    kk = int(min(k, n - 1))
    if kk < 1:
        return None
    idx, sim = _neighbours(Zt, Zt, kk + 1)
    # drop each gene itself (normally the first neighbour; ties handled by position)
    keep = idx != np.arange(n)[:, None]
    first = np.argsort(~keep, axis=1, kind="stable")[:, :kk]
    return _neighbour_weights(np.take_along_axis(idx, first, 1), np.take_along_axis(sim, first, 1), n)


def _loo_knn_pcc(W: sp.csr_matrix | None, train_values: sp.csr_matrix, chunk: int = 256) -> np.ndarray:
    """Leave-one-out kNN accuracy of every training gene: PCC of its kNN prediction from the other ones.

    ``W``: the training genes' leave-one-out kNN weights (`_loo_knn_weights`;
    ``None``, too few genes, gives zeros). The predictions are scored chunk by
    chunk (memory bounded by chunk x cells).
    """
    n = train_values.shape[0]
    if W is None:
        return np.zeros(n)
    out = np.empty(n)
    for s in range(0, n, chunk):
        pred = np.asarray((W[s:s + chunk] @ train_values).todense())
        truth = np.asarray(train_values[s:s + chunk].todense())
        out[s:s + chunk] = _metrics_arrays(truth.T, pred.T)["PCC"].to_numpy()
    return out


def _reference_signal(ref_images, genes, batch: int = 256) -> np.ndarray:
    """Spatial signal of genes in the reference: correlation of each image with its neighbour mean.

    Pearson correlation, over in-tissue pixels, between a gene's reference
    image and the mean of its in-tissue 8-neighbours (the pixel itself
    excluded), clipped to [0, 1]: near 0 for flat or noisy genes, near 1 for
    smooth patterns. NaN when the model carries no reference images.
    """
    from scipy.ndimage import uniform_filter

    if ref_images is None:
        return np.full(len(genes), np.nan)
    idx = ref_images.gene_index(genes)
    M = ref_images.mask.astype(np.float64)
    cnt = uniform_filter(M, 3, mode="constant") * 9.0 - M
    ok = ref_images.mask & (cnt > 0.5)
    out = np.zeros(len(idx))
    if ok.sum() < 3:
        return out
    for s in range(0, len(idx), batch):
        D = ref_images.dense(idx[s:s + batch]).astype(np.float64) * M
        nb = (uniform_filter(D, (1, 3, 3), mode="constant") * 9.0 - D) / np.maximum(cnt, 1.0)
        a, b = D[:, ok], nb[:, ok]
        out[s:s + batch] = _metrics_arrays(a.T, b.T)["PCC"].to_numpy()
    return np.clip(out, 0.0, 1.0)


def _confidence(idx: np.ndarray, sim: np.ndarray, loo_weights: sp.csr_matrix | None, train_names,
                train_values: sp.csr_matrix, ref_signal: np.ndarray) -> pd.DataFrame:
    """Per query gene: how trustworthy its imputation is expected to be.

    ``support`` = similarity-weighted mean, over the gene's ``k`` nearest
    training genes, of their leave-one-out kNN PCC (how well a measured
    gene's target map is predicted from *its* neighbours), times the
    similarity to the nearest one, clipped to [0, 1]: genes far from every
    measured gene, or near unpredictable ones, get low support.
    ``reference_signal`` = the gene's spatial signal in the reference
    (`_reference_signal`). ``confidence`` = the geometric mean of the two
    (``support`` alone when the model has no reference images). ``idx``,
    ``sim``: the query genes' ``k`` nearest training genes (`_neighbours`);
    ``loo_weights``: the training genes' leave-one-out kNN weights.
    """
    loo = _loo_knn_pcc(loo_weights, train_values)
    w = np.clip(sim, 0.0, None)
    support = (w * np.clip(loo[idx], 0.0, None)).sum(1) / np.maximum(w.sum(1), 1e-12)
    support = np.clip(support * np.clip(sim[:, 0], 0.0, 1.0), 0.0, 1.0)
    conf = np.where(np.isfinite(ref_signal), np.sqrt(support * np.nan_to_num(ref_signal)), support)
    return pd.DataFrame({"confidence": conf, "support": support, "reference_signal": ref_signal,
                         "nearest_measured": np.asarray(train_names)[idx[:, 0]], "nearest_similarity": sim[:, 0]})


def _predict_knn(W: sp.csr_matrix, train_values: sp.csr_matrix) -> np.ndarray:
    """Similarity-weighted mean of the k nearest training genes' values (weights ``W``) -> (queries, cells)."""
    return np.asarray((W @ train_values).todense(), dtype=np.float32)


def _predict_mean(n_query: int, train_values: sp.csr_matrix) -> np.ndarray:
    m = np.asarray(train_values.mean(axis=0), dtype=np.float32).ravel()
    return np.repeat(m[None, :], n_query, axis=0)


def _embedding_moments(problem: _Problem, device):
    """Mean and SD of the reference embedding as float32 tensors on ``device`` (to standardise encoder outputs)."""
    import torch

    mu_t = torch.as_tensor(problem.emb_mean, dtype=torch.float32, device=device)
    sd_t = torch.as_tensor(problem.emb_sd, dtype=torch.float32, device=device)
    return mu_t, sd_t


def _trainable_encoder(problem: _Problem, train_genes: pd.Index, device):
    """A trainable copy of the fitted SIGEL's encoder and the training genes' rows in the reference images."""
    import copy

    base = getattr(problem.model, "module_", None)  # the fitted SIGEL's masked autoencoder
    ref_images = problem.ref_images
    if base is None or ref_images is None:
        raise SigelInputError("finetune_encoder=True needs a fitted sigel.SIGEL model (its encoder) and the "
                              "reference images (`model.images_`, or pass `reference_images=`)")
    enc = copy.deepcopy(base).to(device).train()
    for p in enc.parameters():
        p.requires_grad_(True)
    return enc, ref_images.gene_index(problem.ref_of.reindex(train_genes).to_numpy())


def _discriminator_step(Dn, opt_d, y, fake, z):
    """One hinge-loss step of the discriminator (real ``y`` vs detached ``fake``, on the detached embedding)."""
    import torch

    zd = z.detach()
    d_out = Dn(torch.cat([y, fake.detach()]), torch.cat([zd, zd]))
    d_loss = torch.relu(1.0 - d_out[: len(y)]).mean() + torch.relu(1.0 + d_out[len(y):]).mean()
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    return d_loss


def _train_gan(problem: _Problem, train_genes: pd.Index, *, n_steps, batch_size, lr, adv_weight, adv_start,
               hidden, n_prototypes, channels, dropout, embed_noise, weight_decay, finetune_encoder, encoder_lr,
               pixel_budget, neighbour_prior, device, seed, progress):
    """Train generator (+ discriminator); return (generator, encoder-or-None, history DataFrame).

    With ``neighbour_prior`` the generator refines the read-out of a
    :class:`~sigel.model.generator.MeasuredImageBank` of the training genes'
    measured images (``G.measured``), trained with it; a training gene is
    left out of its own read-out (the situation of a query gene, whose prior
    comes from all of them).
    """
    import torch
    from tqdm.auto import tqdm

    from ..model.generator import ImageGenerator, MeasuredImageBank, ProjectionDiscriminator

    img = problem.images
    H, W = img.height, img.width
    n_pix = H * W
    bs = int(max(1, min(batch_size, len(train_genes), pixel_budget // max(n_pix, 1))))
    tidx = img.gene_index(train_genes)
    Zt = torch.from_numpy(problem.z(target_names=train_genes)).to(device)
    D = Zt.shape[1]
    mask = torch.from_numpy(img.mask.astype(np.float32)).to(device)
    n_tis = float(mask.sum().clamp(min=1.0))

    G = ImageGenerator(D, mask, hidden=hidden, n_prototypes=n_prototypes, channels=channels,
                       dropout=dropout, prior=bool(neighbour_prior)).to(device)
    if neighbour_prior:
        G.measured = MeasuredImageBank(Zt, torch.from_numpy(img.dense(tidx).reshape(len(tidx), -1))).to(device)
    Dn = ProjectionDiscriminator(D, mask).to(device)
    params = [{"params": G.parameters(), "lr": lr}]
    enc = None
    ref_idx = None
    if finetune_encoder:
        enc, ref_idx = _trainable_encoder(problem, train_genes, device)
        ref_images = problem.ref_images
        params.append({"params": enc.parameters(), "lr": encoder_lr})
        mu_t, sd_t = _embedding_moments(problem, device)
    opt_g = torch.optim.AdamW(params, weight_decay=weight_decay, betas=(0.5, 0.999))
    opt_d = torch.optim.AdamW(Dn.parameters(), lr=lr, weight_decay=0.0, betas=(0.5, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    start_adv = int(adv_start * n_steps)
    rows = []
    acc = {"rec": 0.0, "g_adv": 0.0, "d": 0.0, "n": 0}
    t0 = time.perf_counter()
    G.train()
    Dn.train()
    bar = tqdm(range(n_steps), desc="impute (gan)", disable=not settings.show_progress(progress), leave=False)
    for step in bar:
        frac = step / max(n_steps - 1, 1)
        scale = 0.5 * (1 + np.cos(np.pi * frac))  # half-cycle cosine decay
        opt_g.param_groups[0]["lr"] = lr * scale
        if enc is not None:
            opt_g.param_groups[1]["lr"] = encoder_lr * scale
        b = torch.randperm(len(train_genes), generator=gen)[:bs].numpy()
        y = torch.from_numpy(img.dense(tidx[b])).to(device)
        if enc is not None:
            x_ref = ref_images.to_tensor(ref_idx[b], device=device)
            z = (enc.embed(x_ref) - mu_t) / sd_t
        else:
            z = Zt[b]
        if embed_noise > 0:
            z = z + embed_noise * torch.randn(z.shape, generator=gen).to(device)
        prior = None if G.measured is None else G.measured(z, exclude=torch.from_numpy(b))[0]
        fake = G(z, prior=prior)
        rec = (((fake - y) ** 2) * mask).sum() / (n_tis * len(b))
        use_adv = adv_weight > 0 and step >= start_adv
        g_adv = torch.zeros((), device=device)
        if use_adv:
            d_loss = _discriminator_step(Dn, opt_d, y, fake, z)
            g_adv = -Dn(fake, z).mean()
            acc["d"] += d_loss.item()
        loss = rec + (adv_weight * g_adv if use_adv else 0.0)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"impute: non-finite generator loss at step {step} "
                                     f"(reconstruction {float(rec):.4g}, adversarial {float(g_adv):.4g})")
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        acc["rec"] += rec.item()
        acc["g_adv"] += g_adv.item()
        acc["n"] += 1
        if (step + 1) % 50 == 0 or step == n_steps - 1:
            n = acc["n"]
            rows.append({"step": step + 1, "reconstruction": acc["rec"] / n, "adversarial_g": acc["g_adv"] / n,
                         "discriminator": acc["d"] / n,
                         "prior_tau": G.measured.tau if G.measured is not None else float("nan"),
                         "seconds": time.perf_counter() - t0})
            bar.set_postfix(rec=f"{acc['rec'] / n:.4f}")
            acc = {"rec": 0.0, "g_adv": 0.0, "d": 0.0, "n": 0}
    G.eval()
    if enc is not None:
        enc.eval()
    return G, enc, pd.DataFrame(rows)


def _generate(problem: _Problem, G, enc, query_ref: pd.Index, *, batch_size, pixel_budget, device):
    """Generated images of the query genes read back at every target cell -> (queries, cells) float32.

    A generator with a neighbour prior reads it from its bank of measured
    images (``G.measured``, trained with it).
    """
    import torch

    img = problem.images
    n_pix = img.height * img.width
    bs = int(max(1, min(max(batch_size, 64), pixel_budget // max(n_pix, 1))))
    pix = torch.from_numpy(img.spot_pixel.astype(np.int64)).to(device)
    out = np.empty((len(query_ref), len(img.spot_pixel)), dtype=np.float32)
    if enc is not None:
        ref_images = problem.ref_images
        ridx = ref_images.gene_index(query_ref)
        mu_t, sd_t = _embedding_moments(problem, device)
    Zq = problem.z(ref_names=query_ref)
    with torch.inference_mode():
        for s in range(0, len(query_ref), bs):
            if enc is not None:
                z = (enc.embed(ref_images.to_tensor(ridx[s:s + bs], device=device)) - mu_t) / sd_t
            else:
                z = torch.from_numpy(Zq[s:s + bs]).to(device)
            prior = None if G.measured is None else G.measured(z)[0]
            g = G(z, prior=prior).reshape(z.shape[0], -1)
            out[s:s + bs] = g[:, pix].float().cpu().numpy()
    return out


def _fit_predict(problem: _Problem, train_genes: pd.Index, query_ref: pd.Index, method: str, *, n_neighbors,
                 gan_kw: dict, device, seed, progress):
    """Predict query genes (reference names) from training genes (target names): (values (q, cells), conf, hist)."""
    Zt = problem.z(target_names=train_genes)
    Zq = problem.z(ref_names=query_ref)
    train_values = problem.images.spot_values(train_genes)
    # each neighbour search once per fit: the confidence and kNN share them (the GAN's prior has its own bank)
    idx, sim = _neighbours(Zq, Zt, n_neighbors)
    W = _neighbour_weights(idx, sim, Zt.shape[0])
    W_loo = _loo_knn_weights(Zt, n_neighbors)
    conf = _confidence(idx, sim, W_loo, train_genes, train_values, _reference_signal(problem.ref_images, query_ref))
    conf.index = query_ref
    history = None
    if method == "mean":
        vals = _predict_mean(len(query_ref), train_values)
    elif method == "knn":
        vals = _predict_knn(W, train_values)
    else:
        G, enc, history = _train_gan(problem, train_genes, device=device, seed=seed, progress=progress, **gan_kw)
        vals = _generate(problem, G, enc, query_ref, batch_size=gan_kw["batch_size"],
                         pixel_budget=gan_kw["pixel_budget"], device=device)
    return vals, conf, history


def _check_common(method, n_neighbors, n_steps, batch_size, adv_weight, min_cells):
    methods = [method] if isinstance(method, str) else list(method)
    for m in methods:
        assert_one_of("method", m, METHODS)
    assert_positive("n_neighbors", n_neighbors)
    assert_positive("n_steps", n_steps)
    assert_positive("batch_size", batch_size)
    assert_positive("adv_weight", adv_weight, allow_zero=True)
    assert_positive("min_cells", min_cells, allow_zero=True)
    return methods


def _prepare(model, target_adata, *, device, n_threads, seed, **problem_kw):
    """Resolve the device, set torch threads, fix the seed and build the `_Problem`: (device, seed, problem)."""
    dev = resolve_device(device)
    set_threads(n_threads)
    seed = settings.seed if seed is None else int(seed)
    return dev, seed, _Problem(model, target_adata, **problem_kw)


def _seeded_fit_predict(problem: _Problem, train_genes: pd.Index, query_ref: pd.Index, method: str, *, device,
                        seed, **kw):
    """`_fit_predict` with torch's global generator seeded to ``seed`` inside a forked (then restored) RNG state."""
    import torch

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _fit_predict(problem, train_genes, query_ref, method, device=device, seed=seed, **kw)


def _predict_query(problem: _Problem, query_ref: pd.Index, method: str, **kw):
    """Values, confidence table and GAN history of the query genes, trained on every shared gene."""
    if len(query_ref):
        return _seeded_fit_predict(problem, problem.shared, query_ref, method, **kw)
    vals = np.zeros((0, len(problem.images.spot_pixel)), dtype=np.float32)
    conf = pd.DataFrame(columns=["confidence", "support", "reference_signal", "nearest_measured",
                                 "nearest_similarity"])
    return vals, conf, None


def _imputed_anndata(problem: _Problem, target_adata, query_ref: pd.Index, vals: np.ndarray, conf: pd.DataFrame):
    """Target cells x (imputed genes + every measured gene, untouched), with the per-gene ``var`` columns."""
    import anndata as ad

    img = problem.images
    measured_vals = np.asarray(img.spot_values().T.todense(), dtype=np.float32)  # cells x measured genes
    # measured genes that failed to image (none with min_spots=0) would be missing here
    X = np.concatenate([vals.T, measured_vals], axis=1) if len(query_ref) else measured_vals
    names = list(query_ref) + list(img.genes)
    var = pd.DataFrame(index=pd.Index(names, name=None))
    var["imputed"] = np.r_[np.ones(len(query_ref), bool), np.zeros(img.n_genes, bool)]
    var["confidence"] = np.r_[conf["confidence"].to_numpy(np.float64) if len(query_ref) else [],
                              np.full(img.n_genes, np.nan)]
    for c in ("support", "reference_signal"):
        var[c] = np.r_[conf[c].to_numpy(np.float64) if len(query_ref) else [], np.full(img.n_genes, np.nan)]
    var["nearest_measured"] = list(conf["nearest_measured"].astype(str)) + [""] * img.n_genes
    ref_of = problem.ref_of
    var["reference_gene"] = list(query_ref) + list(ref_of.reindex(img.genes).fillna("").astype(str))
    obs = target_adata.obs.copy()
    obs.index = pd.Index(img.spot_names)
    out = ad.AnnData(X=X.astype(np.float32), obs=obs, var=var)
    for k, v in target_adata.obsm.items():
        out.obsm[k] = np.asarray(v) if not hasattr(v, "iloc") else v.copy()
    return out


def _run_info(problem: _Problem, query_ref: pd.Index, params: dict, history, seconds: float) -> dict:
    """The ``uns`` entry of an `impute` run."""
    info = {
        "params": params, "n_shared": int(len(problem.shared)), "shared_genes": list(problem.shared),
        "unmatched": list(problem.unmatched), "n_imputed": int(len(query_ref)), "seconds": float(seconds),
        "value_scale": "target GeneImages scale: normalised, log1p, / 0.99 in-tissue quantile, clipped to [0, 1]",
    }
    if history is not None:
        info["history"] = history
    return info


def _gene_subset(genes, allowed: pd.Index, what: str) -> pd.Index:
    """``genes`` as a string Index, all of which must be in ``allowed`` (error: '<n> genes <what>: [...]')."""
    want = pd.Index([str(g) for g in np.atleast_1d(genes)])
    bad = want[~want.isin(allowed)]
    if len(bad):
        raise SigelInputError(f"{len(bad)} genes {what}: {bad[:10].tolist()}")
    return want


# =========================================================================== public API
def impute(
    model,
    target_adata,
    genes=None,
    *,
    method: str = "gan",
    layer: str | None = None,
    spatial_key: str = "spatial",
    library_size_key: str | None = None,
    counts: bool = True,
    geometry: str = "auto",
    resolution: int = 64,
    n_neighbors: int = 10,
    min_cells: int = 3,
    n_steps: int = 600,
    batch_size: int = 32,
    lr: float = 2e-3,
    adv_weight: float = 0.01,
    adv_start: float = 0.3,
    hidden: int = 128,
    n_prototypes: int = 32,
    channels: int = 64,
    dropout: float = 0.1,
    embed_noise: float = 0.1,
    weight_decay: float = 1e-4,
    finetune_encoder: bool = False,
    encoder_lr: float = 1e-4,
    pixel_budget: int = 2**22,
    neighbour_prior: bool = True,
    device: str = "auto",
    seed: int | None = None,
    progress: bool | None = None,
    n_threads: int | None = None,
    reference_images=None,
    key_added: str = KEY,
):
    """Impute genes a targeted panel did not measure, from a model fitted on a full-coverage sample.

    The generator maps a gene's SIGEL embedding (from the reference model) to
    its image on the target's geometry. It is trained on the genes both
    samples measure (matched by name, case-insensitive) and conditioned on
    the embedding only, so any embedded gene can be generated. Training
    minimises the in-tissue mean squared error to the measured target images
    plus a small adversarial term from a conditional projection
    discriminator (hinge loss, switched on after ``adv_start`` of the steps);
    the generator's hidden code reads from a learnable memory bank of
    ``n_prototypes`` feature prototypes (see :mod:`sigel.model.generator`).

    Parameters
    ----------
    model
        A `sigel.SIGEL` fitted on the full-coverage reference sample (or a
        genes x D embedding DataFrame for ``method='knn'``/``'mean'`` and for
        ``'gan'`` without fine-tuning).
    target_adata
        The panel sample: AnnData (cells/spots x measured genes, counts in
        ``X`` or ``layers[layer]``) with its own coordinates: a grid/Visium
        lattice or free coordinates in ``obsm[spatial_key]`` (rasterised to
        ``resolution`` pixels on the longest side). Never modified.
    genes
        Genes to impute (names of the reference model, case-insensitive).
        Default: every embedded gene the target does not measure. Requested
        genes the target measures are returned as measured.
    method
        ``'gan'`` (generator + discriminator + memory bank), ``'knn'``
        (similarity-weighted mean of the target images of the ``n_neighbors``
        nearest measured genes in embedding space; weights = cosine
        similarity clipped at 0) or ``'mean'`` (mean image of the measured
        genes; a floor).
    layer, spatial_key, library_size_key, geometry, resolution
        How the target images are built (`sigel.GeneImages.from_anndata`);
        normalisation settings follow the reference model's images.
    counts
        ``True`` (default): the target must hold raw counts (whole numbers)
        when it is normalised; ``False`` uses its values as they are (e.g. an
        already normalised target).
    n_neighbors
        Neighbours for ``'knn'`` and for the confidence score.
    min_cells
        Shared genes detected in fewer target cells do not train.
    n_steps, batch_size, lr, weight_decay
        Generator training: steps, genes per batch, AdamW learning rate
        (half-cycle cosine decay) and weight decay.
    adv_weight, adv_start
        Weight of the adversarial loss and the fraction of steps before it
        starts (0 weight = plain regression generator).
    hidden, n_prototypes, channels, dropout
        Generator size: hidden code width, memory-bank slots (0 = no bank),
        seed-image channels, dropout.
    embed_noise
        Standard deviation of Gaussian noise added to the standardised
        embeddings while training (smooths the map between genes).
    finetune_encoder
        Also fine-tune (a copy of) the reference encoder: shared genes'
        reference images are re-embedded with gradients at every step and
        query genes are embedded with the tuned encoder. The model itself is
        not modified.
    encoder_lr
        Learning rate of the encoder when fine-tuning.
    pixel_budget
        Upper bound on genes x target pixels held densely at once (caps the
        batch size, so memory is bounded for large targets).
    neighbour_prior
        The generator refines a prior image instead of drawing from scratch.
        The prior is read from a bank of the measured genes' images
        (:class:`~sigel.model.generator.MeasuredImageBank`): every measured
        image weighted by ``softmax(cosine of the standardised embeddings /
        tau)``, with the temperature ``tau`` trained with the generator
        (starts at 0.2); a training gene is left out of its own read-out, so
        it sees the prior a query gene gets. The output is
        ``sigmoid(logit(prior) + residual)``, the residual's last layer
        starting at 0, so training starts from the bank's read-out.
        On by default; ``False`` draws every image from the embedding alone.
        Median PCC with / without it, and of ``method='knn'``
        (benchmarks/RESULTS.md, "Imputation", Session 15): DLPFC 151673 ->
        151675, 150-gene panel, 0.123 / 0.102 / 0.115; 151675 -> 151673
        0.125 / 0.106 / 0.118; Molecular Cartography, 50 genes, 0.372 /
        0.321 / 0.345. With about 9 training genes per fold (osmFISH, 11
        genes in all) the result swings with the random initialisation
        (0.311 in one run, 0.253 in another, against 0.268 without the
        prior and 0.268 for kNN).
    device
        ``'auto'`` (CUDA, then MPS, then CPU), ``'cpu'``, ``'cuda'``, ...
    seed
        Seed of the training run (same seed -> same result on a device).
    progress
        Show a progress bar (default: `sigel.settings`).
    n_threads
        Torch CPU threads (``None`` leaves torch's default).
    reference_images
        The reference's `sigel.GeneImages` (default ``model.images_``; a
        loaded model has none). Used for the confidence score's reference
        signal and by ``finetune_encoder``.
    key_added
        Key of the ``uns`` entry with the run's parameters.

    Returns
    -------
    AnnData
        Target cells/spots (``obs``, ``obsm`` copied) x (imputed genes +
        every measured gene). ``X`` (dense float32) holds values on the
        target images' scale (library-size normalised, ``log1p``, divided by
        the gene's 0.99 in-tissue quantile, clipped to [0, 1]) read at each
        cell's pixel; measured genes keep their measured values, imputed
        genes are read from the generated image. ``var['imputed']`` (bool),
        ``var['confidence']`` in [0, 1] (imputed genes; NaN for measured
        genes): the geometric mean of ``var['reference_signal']`` (the gene's
        spatial signal in the reference: correlation of its reference image
        with its neighbour-mean image) and ``var['support']`` (how well the
        measured genes nearest to it in embedding space predict each other,
        leave-one-out kNN PCC, weighted by similarity); ``var['nearest_measured']``,
        ``var['reference_gene']``; ``uns[key_added]``: ``params``,
        ``n_shared``, ``shared_genes``, ``unmatched`` (measured genes without
        an embedding), ``history`` (GAN training losses and the prior's
        learned temperature ``prior_tau``) and ``seconds``.

    Examples
    --------
    >>> import sigel
    >>> ref = sigel.datasets.synthetic_tissue(60, shape=(16, 16), seed=1)
    >>> panel = sigel.datasets.synthetic_tissue(60, shape=(24, 24), seed=1, sample_seed=2)[:, :30]
    >>> model = sigel.SIGEL(epochs=2).fit(ref, seed=0)  # doctest: +SKIP
    >>> out = sigel.tl.impute(model, panel, method="knn")  # doctest: +SKIP
    >>> out.var["imputed"].sum()  # doctest: +SKIP
    30
    """
    _check_common(method, n_neighbors, n_steps, batch_size, adv_weight, min_cells)
    if not isinstance(method, str):
        raise SigelInputError(f"`method` must be one of {list(METHODS)}; got {method!r}")
    assert_in_range("adv_start", adv_start, 0.0, 1.0)
    t0 = time.perf_counter()
    dev, seed, problem = _prepare(model, target_adata, device=device, n_threads=n_threads, seed=seed, layer=layer,
                                  spatial_key=spatial_key, library_size_key=library_size_key, geometry=geometry,
                                  resolution=resolution, min_cells=min_cells, reference_images=reference_images,
                                  counts=counts)
    query_ref, _ = problem.resolve_query(genes)
    gan_kw = dict(n_steps=int(n_steps), batch_size=int(batch_size), lr=float(lr), adv_weight=float(adv_weight),
                  adv_start=float(adv_start), hidden=int(hidden), n_prototypes=int(n_prototypes),
                  channels=int(channels), dropout=float(dropout), embed_noise=float(embed_noise),
                  weight_decay=float(weight_decay), finetune_encoder=bool(finetune_encoder),
                  encoder_lr=float(encoder_lr), pixel_budget=int(pixel_budget),
                  neighbour_prior=bool(neighbour_prior))
    vals, conf, history = _predict_query(problem, query_ref, method, n_neighbors=n_neighbors, gan_kw=gan_kw,
                                         device=dev, seed=seed, progress=progress)
    out = _imputed_anndata(problem, target_adata, query_ref, vals, conf)
    seconds = time.perf_counter() - t0
    img = problem.images
    params = dict(method=method, n_neighbors=int(n_neighbors), min_cells=int(min_cells), seed=seed,
                  device=str(dev), geometry=img.settings.get("geometry"), image_shape=[img.height, img.width],
                  **{k: v for k, v in gan_kw.items()})
    out.uns[key_added] = _run_info(problem, query_ref, params, history, seconds)
    logger.info(f"impute ({method}): {len(query_ref)} genes imputed from {len(problem.shared)} shared genes on a "
                f"{img.height}x{img.width} target in {seconds:.1f}s -> AnnData ({out.n_obs} x {out.n_vars})")
    return out


def impute_cv(
    model,
    target_adata,
    *,
    k: int = 5,
    method="gan",
    genes=None,
    layer: str | None = None,
    spatial_key: str = "spatial",
    library_size_key: str | None = None,
    counts: bool = True,
    geometry: str = "auto",
    resolution: int = 64,
    n_neighbors: int = 10,
    min_cells: int = 3,
    device: str = "auto",
    seed: int | None = None,
    progress: bool | None = None,
    n_threads: int | None = None,
    reference_images=None,
    **gan_options,
) -> pd.DataFrame:
    """K-fold cross-validation of imputation over the measured shared genes.

    The shared genes (measured in the target and embedded by the model) are
    split into ``k`` folds; each fold is hidden in turn, imputed from the
    others and scored against its measured values with `impute_metrics`.
    Every method listed sees the same folds.

    Parameters
    ----------
    model, target_adata
        As in `impute`.
    k
        Number of folds (at least 2).
    method
        A method name or a list of them (``'gan'``, ``'knn'``, ``'mean'``).
    genes
        Restrict the evaluated genes to these shared genes (target names);
        all shared genes still train.
    layer, spatial_key, library_size_key, counts, geometry, resolution, n_neighbors, min_cells
        As in `impute`.
    device, seed, progress, n_threads, reference_images
        As in `impute`; ``seed`` also fixes the folds.
    **gan_options
        Passed to the GAN (``n_steps``, ``batch_size``, ``lr``, ``adv_weight``,
        ``adv_start``, ``hidden``, ``n_prototypes``, ``channels``,
        ``dropout``, ``embed_noise``, ``weight_decay``, ``finetune_encoder``,
        ``encoder_lr``, ``pixel_budget``, ``neighbour_prior``).

    Returns
    -------
    pandas.DataFrame
        One row per (gene, method), indexed by gene: ``method``, ``fold``,
        ``PCC``, ``SSIM``, ``RMSE``, ``JS`` (Li et al. 2022 definitions; see
        `impute_metrics`), ``confidence``, ``support``, ``reference_signal``
        (see `impute`) and ``seconds`` (the fold's run time). Summarise with `impute_summary`.

    Examples
    --------
    >>> import sigel
    >>> ref = sigel.datasets.synthetic_tissue(60, shape=(16, 16), seed=1)
    >>> panel = sigel.datasets.synthetic_tissue(60, shape=(24, 24), seed=1, sample_seed=2)
    >>> model = sigel.SIGEL(epochs=2).fit(ref, seed=0)  # doctest: +SKIP
    >>> cv = sigel.tl.impute_cv(model, panel, k=3, method=["knn", "mean"])  # doctest: +SKIP
    >>> sigel.tl.impute_summary(cv)  # doctest: +SKIP
    """
    defaults = dict(n_steps=600, batch_size=32, lr=2e-3, adv_weight=0.01, adv_start=0.3, hidden=128,
                    n_prototypes=32, channels=64, dropout=0.1, embed_noise=0.1, weight_decay=1e-4,
                    finetune_encoder=False, encoder_lr=1e-4, pixel_budget=2**22, neighbour_prior=True)
    unknown = set(gan_options) - set(defaults)
    if unknown:
        raise SigelInputError(f"unknown options for impute_cv: {sorted(unknown)}; GAN options are {sorted(defaults)}")
    gan_kw = {**defaults, **gan_options}
    methods = _check_common(method, n_neighbors, gan_kw["n_steps"], gan_kw["batch_size"], gan_kw["adv_weight"],
                            min_cells)
    assert_positive("k", k)
    if int(k) < 2:
        raise SigelInputError(f"`k` (folds) must be >= 2; got {k}")
    dev, seed, problem = _prepare(model, target_adata, device=device, n_threads=n_threads, seed=seed, layer=layer,
                                  spatial_key=spatial_key, library_size_key=library_size_key, geometry=geometry,
                                  resolution=resolution, min_cells=min_cells, reference_images=reference_images,
                                  counts=counts)
    shared = problem.shared
    if int(k) > len(shared):
        raise SigelInputError(f"`k`={k} folds but only {len(shared)} shared genes")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(shared), dtype=np.int64)
    fold_of[rng.permutation(len(shared))] = np.arange(len(shared)) % int(k)
    evaluate = shared
    if genes is not None:
        evaluate = _gene_subset(genes, shared, "to evaluate are not shared training genes")
    truth_all = problem.images.spot_values(shared)
    frames = []
    for f in range(int(k)):
        test = shared[fold_of == f]
        test = test[test.isin(evaluate)]
        if not len(test):
            continue
        train = shared[fold_of != f]
        truth = np.asarray(truth_all[np.flatnonzero(fold_of == f)].todense())
        truth = truth[np.flatnonzero(shared[fold_of == f].isin(evaluate))].T
        q_ref = pd.Index(problem.ref_of.reindex(test).to_numpy())
        for m in methods:
            t0 = time.perf_counter()
            vals, conf, _ = _seeded_fit_predict(problem, train, q_ref, m, n_neighbors=n_neighbors, gan_kw=gan_kw,
                                                device=dev, seed=seed + f, progress=progress)
            sec = time.perf_counter() - t0
            met = _metrics_arrays(truth, vals.T)
            met.index = test
            met.insert(0, "fold", f)
            met.insert(0, "method", m)
            for c in ("confidence", "support", "reference_signal"):
                met[c] = conf[c].to_numpy()
            met["seconds"] = sec
            frames.append(met)
        logger.info(f"impute_cv: fold {f + 1}/{k} ({len(test)} genes) done")
    out = pd.concat(frames)
    out.index.name = "gene"
    return out


# =========================================================================== metrics
def _metrics_arrays(T: np.ndarray, P: np.ndarray) -> pd.DataFrame:
    """Li et al. 2022 metrics per column of truth ``T`` and prediction ``P`` (cells x genes)."""
    T = np.asarray(T, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if T.shape != P.shape:
        raise SigelInputError(f"truth and imputed values must have the same shape; got {T.shape} and {P.shape}")
    n = T.shape[0]
    if n < 2:
        raise SigelInputError(f"need at least 2 cells to score; got {n}")
    # PCC on the values as given (0 when either vector is constant)
    Tc, Pc = T - T.mean(0), P - P.mean(0)
    st, sp_ = np.sqrt((Tc**2).sum(0)), np.sqrt((Pc**2).sum(0))
    ok = (st > 1e-12) & (sp_ > 1e-12)
    pcc = np.where(ok, (Tc * Pc).sum(0) / np.where(ok, st * sp_, 1.0), 0.0)
    # SSIM on max-scaled vectors (C1 = 0.01^2, C2 = 0.03^2, C3 = C2 / 2; population moments)
    def _maxs(X):
        mx = X.max(0)
        return X / np.where(mx > 0, mx, 1.0)
    Tm, Pm = _maxs(T), _maxs(P)
    mu1, mu2 = Tm.mean(0), Pm.mean(0)
    s1, s2 = Tm.std(0), Pm.std(0)
    s12 = ((Tm - mu1) * (Pm - mu2)).mean(0)
    C1, C2 = 0.01**2, 0.03**2
    C3 = C2 / 2
    ssim = ((2 * mu1 * mu2 + C1) / (mu1**2 + mu2**2 + C1) * (2 * s1 * s2 + C2) / (s1**2 + s2**2 + C2)
            * (s12 + C3) / (s1 * s2 + C3))
    # RMSE on z-scored vectors (population SD; a constant vector z-scores to 0)
    def _z(X):
        sd = X.std(0)
        return (X - X.mean(0)) / np.where(sd > 1e-12, sd, 1.0)
    rmse = np.sqrt(((_z(T) - _z(P)) ** 2).mean(0))
    # Jensen-Shannon divergence (natural log) on sum-scaled vectors (negatives clipped to 0)
    def _p(X):
        X = np.clip(X, 0, None)
        s = X.sum(0)
        return np.where(s > 0, X / np.where(s > 0, s, 1.0), 1.0 / X.shape[0])
    p, q = _p(T), _p(P)
    m = 0.5 * (p + q)

    def _kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1.0)), 0.0)
        return t.sum(0)
    js = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return pd.DataFrame({"PCC": pcc, "SSIM": ssim, "RMSE": rmse, "JS": js})


def _as_frame(x, what: str) -> pd.DataFrame:
    if isinstance(x, pd.DataFrame):
        return x
    if hasattr(x, "var_names") and hasattr(x, "obs_names"):
        X = x.X
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        return pd.DataFrame(X, index=pd.Index(x.obs_names.astype(str)), columns=pd.Index(x.var_names.astype(str)))
    arr = x.toarray() if sp.issparse(x) else np.asarray(x)
    if arr.ndim != 2:
        raise SigelInputError(f"{what} must be 2-D (cells x genes); got shape {arr.shape}")
    return pd.DataFrame(arr)


def impute_metrics(truth, imputed, *, genes=None) -> pd.DataFrame:
    """Per-gene accuracy of imputed values (Li et al. 2022, Nat Methods definitions).

    For every gene (a column of cells/spots): PCC, Pearson correlation of the
    values as given (0 when a vector is constant); SSIM, structural
    similarity of the per-gene vectors after dividing each by its maximum,
    ``l * c * s`` with ``C1 = 0.01**2``, ``C2 = 0.03**2``, ``C3 = C2 / 2``
    and population moments; RMSE, root mean squared error of the z-scored
    vectors; JS, Jensen-Shannon divergence (natural log) of the vectors
    scaled to sum 1. Higher PCC/SSIM and lower RMSE/JS are better.

    Parameters
    ----------
    truth
        Measured values: AnnData (``X``), DataFrame (cells x genes) or array.
    imputed
        Predicted values of the same type and cells, or a dict
        ``{method: predictions}`` to score several methods at once.
        DataFrames / AnnData are matched to ``truth`` by cell and gene names.
    genes
        Genes to score (default: all genes present in both).

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``PCC``, ``SSIM``, ``RMSE``, ``JS`` (and ``method``
        first when ``imputed`` is a dict).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> t = pd.DataFrame(rng.random((50, 3)), columns=["a", "b", "c"])
    >>> m = sigel.tl.impute_metrics(t, {"same": t, "noise": t + rng.random((50, 3))})  # doctest: +SKIP
    >>> float(m.loc[m.method == "same", "PCC"].min())  # doctest: +SKIP
    1.0
    """
    if isinstance(imputed, dict):
        frames = []
        for name, pred in imputed.items():
            f = impute_metrics(truth, pred, genes=genes)
            f.insert(0, "method", str(name))
            frames.append(f)
        if not frames:
            raise SigelInputError("`imputed` is an empty dict")
        return pd.concat(frames)
    T = _as_frame(truth, "truth")
    P = _as_frame(imputed, "imputed")
    named = not isinstance(T.columns, pd.RangeIndex) and not isinstance(P.columns, pd.RangeIndex)
    if named:
        T.columns = T.columns.astype(str)
        P.columns = P.columns.astype(str)
        common = T.columns[T.columns.isin(P.columns)]
        if genes is not None:
            common = _gene_subset(genes, common, "not in both truth and imputed")
        if not len(common):
            raise SigelInputError("truth and imputed share no gene names")
        if not isinstance(T.index, pd.RangeIndex) and not isinstance(P.index, pd.RangeIndex):
            T.index = T.index.astype(str)
            P.index = P.index.astype(str)
            if not T.index.isin(P.index).all():
                raise SigelInputError("imputed values lack some cells of truth (matched by cell names)")
            P = P.loc[T.index]
        T, P = T[common], P[common]
    elif genes is not None:
        raise SigelInputError("`genes` needs named columns (DataFrame or AnnData inputs)")
    out = _metrics_arrays(T.to_numpy(), P.to_numpy())
    out.index = pd.Index(T.columns.astype(str), name="gene")
    return out


def impute_summary(metrics: pd.DataFrame, *, stat: str = "median") -> pd.DataFrame:
    """Per-method summary of `impute_metrics` / `impute_cv` tables with the accuracy score (AS).

    For each method the ``stat`` (median or mean) of PCC, SSIM, RMSE and JS
    over genes; then, as in Li et al. 2022, methods are ranked on each
    metric (rank ``N`` = best: highest PCC/SSIM, lowest RMSE/JS; ties share
    the mean rank) and AS is the mean of the four ranks (higher is better).

    Parameters
    ----------
    metrics
        A table with columns ``method``, ``PCC``, ``SSIM``, ``RMSE``, ``JS``
        (a single-method table without ``method`` is also accepted).
    stat
        ``'median'`` or ``'mean'`` over genes.

    Returns
    -------
    pandas.DataFrame
        Indexed by method: ``PCC``, ``SSIM``, ``RMSE``, ``JS``, ``n_genes``,
        ``AS``; sorted by AS (best first).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = pd.DataFrame(np.random.default_rng(0).random((40, 4)))
    >>> m = sigel.tl.impute_metrics(t, {"a": t, "b": t[::-1].to_numpy()})  # doctest: +SKIP
    >>> sigel.tl.impute_summary(m).index[0]  # doctest: +SKIP
    'a'
    """
    assert_one_of("stat", stat, ("median", "mean"))
    cols = ["PCC", "SSIM", "RMSE", "JS"]
    missing = [c for c in cols if c not in metrics.columns]
    if missing:
        raise SigelInputError(f"metrics table lacks columns {missing}; use impute_metrics() or impute_cv() output")
    m = metrics if "method" in metrics.columns else metrics.assign(method="method")
    g = m.groupby("method", sort=False)[cols]
    summ = g.median() if stat == "median" else g.mean()
    summ["n_genes"] = m.groupby("method", sort=False).size()
    ranks = pd.concat([summ["PCC"].rank(), summ["SSIM"].rank(),
                       (-summ["RMSE"]).rank(), (-summ["JS"]).rank()], axis=1)
    summ["AS"] = ranks.mean(1)
    return summ.sort_values("AS", ascending=False)
