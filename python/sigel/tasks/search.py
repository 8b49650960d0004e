"""Designated-pattern search: find the genes whose spatial pattern matches a template.

A template (region labels, a mask or a continuous pattern) becomes several
simulated pseudo-genes (`sigel.sim.pseudo_gene`: negative binomial counts
calibrated on the observed genes), which are imaged on the model's grid
exactly as the real genes were and embedded with the trained encoder (no
retraining). Real genes are ranked by their mean cosine similarity to the
pseudo-gene draws. Reference-free: no marker gene is needed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import _keys
from .._settings import logger
from .._validate import SigelInputError, assert_positive

__all__ = ["pattern_search"]

DEFAULT_QUANTILES = {"pattern": 0.9, "background": 0.5}


def pattern_search(
    model,
    adata,
    template,
    *,
    quantiles: dict | None = None,
    means: dict | None = None,
    taper: float = 0.0,
    n_draws: int = 10,
    genes=None,
    center: bool = True,
    engine: str = "numpy",
    image_options: dict | None = None,
    seed: int | None = 0,
    key_added: str = "sigel_pattern_search",
) -> pd.DataFrame:
    """Rank genes by the similarity of their embedding to a simulated designated pattern.

    Parameters
    ----------
    model
        A trained `sigel.SIGEL`.
    adata
        The AnnData the model was trained on (same spots): supplies the
        coordinates, the calibration counts and the library sizes.
    template
        One value per spot (region labels, booleans, or a pattern in [0, 1]),
        or a 2-D mask/label image; see `sigel.sim` (``layers``, ``core``,
        ``ring``, ``crescent``, ``interface``, ``checkerboard``, ``from_mask``).
    quantiles
        ``{region: q}``: region means as quantiles of the observed genes'
        regional means. Default for two-region templates (masks, patterns):
        ``{"pattern": 0.9, "background": 0.5}``.
    means
        ``{region: mean}`` explicit mean counts instead of ``quantiles``.
    taper
        Tapered edges, in spot spacings.
    n_draws
        Pseudo-gene draws embedded (similarities are averaged over them).
    genes
        Genes to rank (default: all the model's genes).
    center
        Subtract the mean gene vector before cosine similarities (recommended:
        it removes the component all genes share).
    engine
        Simulator engine, ``"numpy"`` or ``"r"``.
    image_options
        Overrides of the model's image options (`sigel.GeneImages.from_anndata`
        arguments, e.g. ``library_size_key``) for reading ``adata``.
    seed
        Random seed of the simulation.
    key_added
        ``adata.uns`` key for the result.

    Returns
    -------
    pandas.DataFrame
        Index gene; ``similarity`` (mean cosine over the draws),
        ``similarity_sd`` (its SD over draws) and ``rank`` (1 = most similar);
        sorted by rank; ``.attrs['region_means']`` holds the region means
        used. ``adata.uns[key_added]`` stores the table, ``pseudo_image`` (the
        mean pseudo-gene image, H x W, NaN off tissue, for
        `sigel.pl.pattern_search`) and the parameters.

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(100, seed=0)
    >>> model = sigel.SIGEL(epochs=2, embed_dim=8).fit(ad)                 # doctest: +SKIP
    >>> tpl = sigel.datasets.family_patterns(ad.obs["u"], ad.obs["v"])["layer_top"]
    >>> hits = sigel.tl.pattern_search(model, ad, tpl, n_draws=5)          # doctest: +SKIP
    >>> hits.head()                                                        # doctest: +SKIP
    """
    from .. import sim, tissue
    from ._model import check_model, model_image_options, same_grid

    check_model(model, "pattern_search")
    assert_positive("n_draws", n_draws)
    opts = model_image_options(model, image_options, adata)
    from .._validate import assert_unique_names

    layer = opts.get("layer")
    counts = tissue.counts(adata, layer, integers=bool(opts.get("counts", True)))
    assert_unique_names(pd.Index(adata.var_names.astype(str)), "gene names (adata.var_names)")
    if quantiles is None and means is None:
        _, regions, _ = sim.region_weights(_coords(adata, opts), template)
        if set(regions) != set(DEFAULT_QUANTILES):
            raise SigelInputError(
                f"the template has regions {regions}; give `quantiles` or `means` for each of them"
            )
        quantiles = dict(DEFAULT_QUANTILES)
    lib = sim.real_library_size(adata, opts)
    Y, params = sim.pseudo_gene(_coords(adata, opts), template, counts=counts, library_size=lib,
                                quantiles=quantiles, means=means, taper=taper, n_draws=int(n_draws),
                                engine=engine, seed=seed, return_params=True)
    names = [f"__pseudo{i}" for i in range(Y.shape[1])]
    pim = sim.pseudo_images(adata, Y, names, opts, library_size=lib)
    ref = _reference_grid(model, adata, opts)
    if ref is not None:
        same_grid(pim, ref)
    P = model.embed_images(pim).astype(np.float64)

    E = model.embeddings_
    if genes is not None:
        wanted = pd.Index([str(g) for g in np.atleast_1d(genes)])
        missing = wanted.difference(E.index)
        if len(missing):
            raise SigelInputError(f"{len(missing)} genes are not embedded by the model: {missing[:10].tolist()}")
        E = E.loc[wanted]
    Z = E.to_numpy(np.float64)
    if center:
        mu = model.embeddings_.to_numpy(np.float64).mean(0)
        Z, P = Z - mu, P - mu
    Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    P = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    S = Z @ P.T                                                   # genes x draws
    out = pd.DataFrame({"similarity": S.mean(1), "similarity_sd": S.std(1, ddof=1) if S.shape[1] > 1 else 0.0},
                       index=pd.Index(E.index, name="gene"))
    out["rank"] = out["similarity"].rank(ascending=False, method="first").astype(np.int64)
    out = out.sort_values("rank")
    img = np.asarray(pim.values.mean(axis=0)).reshape(pim.height, pim.width).astype(np.float64)
    img[~pim.mask] = np.nan
    out.attrs["region_means"] = {k: float(v) for k, v in params["region_means"].items()}
    _keys.store(adata, "uns", key_added, {
        "table": out.copy(),
        "pseudo_image": img,
        "params": dict(quantiles=quantiles, means=means, taper=float(taper), n_draws=int(n_draws),
                       center=bool(center), engine=engine, seed=seed,
                       region_means=dict(params["region_means"]), trend=list(params["trend"])),
    })
    logger.info("pattern_search: top genes %s", ", ".join(map(str, out.index[:5])))
    return out


def _coords(adata, opts):
    from .. import tissue

    return tissue.coordinates(adata, opts.get("spatial_key", "spatial"))


def _reference_grid(model, adata, opts):
    """The real genes' grid (the model's training images when available)."""
    if getattr(model, "images_", None) is not None:
        return model.images_
    return None
