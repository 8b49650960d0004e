"""Context maps: where on the tissue each context of genes is expressed.

A context's map is the membership-weighted mean of its genes' normalised
images (the images SIGEL trained on: library-size normalised, log1p, robustly
scaled per gene to [0, 1]). Read at the spots instead of the pixels, the same
weighting gives a spots x contexts score matrix for ``obsm`` / ``reducedDim``.
Both are one sparse product (contexts x genes) @ (genes x pixels or spots).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._keys import CONTEXT_SCORES, store
from .._settings import logger
from .._validate import SigelInputError, assert_in_range, assert_positive
from ..data import GeneImages
from ..data.setup import checked_options
from ._genes import _is_anndata, membership_frame
from ._model import setup_options


def context_names(contexts) -> list:
    """Context names from names (``'context_3'``) or integers (``3``, ``'3'``)."""
    items = [contexts] if isinstance(contexts, (str, int, np.integer)) else list(contexts)
    out = []
    for c in items:
        if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.isdigit()):
            out.append(f"context_{int(c)}")
        else:
            out.append(str(c))
    return out


def _model_images(model, images, genes) -> GeneImages:
    """The gene images to average: given ones, an AnnData rebuilt with the model's options, or the training images."""
    if images is None:
        images = getattr(model, "images_", None)
        if images is None:
            raise SigelInputError(
                "the model carries no training images (e.g. after SIGEL.load()); pass `images=` "
                "(a sigel.GeneImages or the AnnData the model was fitted on)"
            )
        return images
    if isinstance(images, GeneImages):
        return images
    if _is_anndata(images):
        train = getattr(model, "images_", None)
        setup = getattr(model, "setup_", None)
        # reuse the training images only for the same content (counts, coordinates, names), never by names alone
        if isinstance(train, GeneImages) and setup is not None and setup.same_content(images):
            return train
        opts = checked_options(images, setup_options(model))
        keep = pd.Index(images.var_names.astype(str)).intersection(pd.Index(genes))
        if len(keep) == 0:
            raise SigelInputError("none of the model's genes are in adata.var_names")
        opts.pop("genes", None)
        return GeneImages.from_anndata(images, genes=keep, **opts)
    raise SigelInputError(f"`images` must be a sigel.GeneImages or an AnnData; got {type(images).__name__}")


def _weights(mem: pd.DataFrame, images: GeneImages, contexts, min_genes: int, min_membership: float):
    """(context names, genes x contexts weight matrix restricted to image genes, image row indices)."""
    common = mem.index.intersection(images.genes)
    if len(common) == 0:
        raise SigelInputError("no gene is shared by the memberships and the images; are they from the same data?")
    if len(common) < len(mem.index):
        logger.info(f"context maps: {len(mem.index) - len(common)} genes of the model are not in the images")
    W = mem.loc[common]
    if contexts is not None:
        want = context_names(contexts)
        bad = [c for c in want if c not in W.columns]
        if bad:
            raise SigelInputError(f"contexts {bad} not found; available: {list(W.columns)[:20]}")
        W = W[want]
    raw = W.to_numpy(np.float64)
    Wv = np.where(raw >= min_membership, raw, 0.0)
    n_genes = (Wv > 0).sum(0)
    empty = n_genes == 0                 # no gene above the threshold: fall back to the soft weights
    Wv[:, empty] = raw[:, empty]
    if (Wv.sum(0) <= 0).any():
        Wv[:, Wv.sum(0) <= 0] = 1.0 / Wv.shape[0]
    keep = n_genes >= int(min_genes)
    if not keep.any():
        raise SigelInputError(f"no context has >= {min_genes} genes with membership >= {min_membership}")
    if (~keep).any() and contexts is not None:
        logger.warning(f"context maps: skipped {list(W.columns[~keep])} (fewer than {min_genes} genes)")
    return list(W.columns[keep]), Wv[:, keep], images.gene_index(common)


def context_maps(model, images=None, *, contexts=None, min_genes: int = 1,
                 min_membership: float = 0.1) -> dict:
    """Map every context onto the tissue: membership-weighted mean of its genes' images.

    ``map_k = sum_g w_gk x_g / sum_g w_gk`` with ``w_gk`` the membership of
    gene ``g`` in context ``k`` (set to 0 below ``min_membership``, so a
    context averages its own genes; a gene may count in several contexts) and
    ``x_g`` its normalised image (values in [0, 1]).

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL` (or an AnnData with ``varm['sigel_contexts']``,
        or a genes x contexts membership DataFrame, with ``images``).
    images
        ``None``: the model's training images. A `sigel.GeneImages`, or an
        AnnData (images rebuilt with the model's saved image options).
    contexts
        Subset of contexts (names ``'context_3'`` or integers); default all.
    min_genes
        Skip contexts with fewer genes (membership >= ``min_membership``).
    min_membership
        Memberships below this count as 0.

    Returns
    -------
    dict
        Context name -> ``(height, width)`` float array, NaN outside the tissue,
        in context order.

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(60, seed=1)
    >>> model = sigel.SIGEL(epochs=2, pretrain_epochs=1, embed_dim=8, n_contexts=3).fit(adata)  # doctest: +SKIP
    >>> maps = sigel.tl.context_maps(model)                                                   # doctest: +SKIP
    >>> sorted(maps)                                                                          # doctest: +SKIP
    ['context_0', 'context_1', 'context_2']
    """
    assert_positive("min_genes", min_genes, allow_zero=True)
    assert_in_range("min_membership", min_membership, 0.0, 1.0)
    mem = membership_frame(model)
    im = _model_images(model, images, mem.index)
    names, W, rows = _weights(mem, im, contexts, min_genes, min_membership)
    Ws = sp.csr_matrix(W.T)                                          # contexts x genes
    M = np.asarray((Ws @ im.values[rows]).todense(), dtype=np.float64)  # contexts x pixels
    M /= W.sum(0)[:, None]
    M[:, ~im.mask.ravel()] = np.nan
    maps = {n: M[i].reshape(im.height, im.width) for i, n in enumerate(names)}
    logger.info(f"context maps: {len(maps)} contexts on a {im.height}x{im.width} grid")
    return maps


def context_scores(model, adata_or_images=None, *, contexts=None, min_membership: float = 0.1,
                   key_added: str = CONTEXT_SCORES) -> pd.DataFrame:
    """Per-spot context scores: membership-weighted mean of the genes' normalised values at each spot.

    The spot-level counterpart of `context_maps` (the same weights, read at
    the spots instead of the pixels).

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL` (or memberships, with images).
    adata_or_images
        ``None``: the training images; an AnnData (the training data, or a new
        sample whose images are rebuilt with the model's image options) or a
        `sigel.GeneImages`.
    contexts
        Subset of contexts (default all).
    min_membership
        Memberships below this count as 0.
    key_added
        Where to store the scores when an AnnData is given.

    Returns
    -------
    pandas.DataFrame
        Spots x contexts (index: spot names, columns ``context_<k>``, all K
        contexts; one without any gene at ``min_membership`` is averaged over
        its soft memberships).
        With an AnnData, also sets ``adata.obsm[key_added]``: the same
        DataFrame, aligned to ``adata.obs_names``.

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.synthetic_tissue(60, seed=1)
    >>> model = sigel.SIGEL(epochs=2, pretrain_epochs=1, embed_dim=8, n_contexts=3).fit(adata)  # doctest: +SKIP
    >>> sigel.tl.context_scores(model, adata).shape == (adata.n_obs, 3)                      # doctest: +SKIP
    True
    """
    assert_in_range("min_membership", min_membership, 0.0, 1.0)
    mem = membership_frame(model)
    im = _model_images(model, adata_or_images, mem.index)
    names, W, rows = _weights(mem, im, contexts, 0, min_membership)
    V = im.spot_values(im.genes[rows])                     # genes x spots (sparse)
    S = np.asarray((V.T @ sp.csr_matrix(W)).todense(), dtype=np.float64) / W.sum(0)[None, :]
    out = pd.DataFrame(S, index=pd.Index(im.spot_names, name=None), columns=names)
    if _is_anndata(adata_or_images):
        obs = adata_or_images.obs_names.astype(str)
        store(adata_or_images, "obsm", key_added, out.reindex(obs).set_axis(adata_or_images.obs_names))
    return out
