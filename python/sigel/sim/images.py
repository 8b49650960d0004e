"""Gene images of simulated genes on the grid of a model's training images.

Pattern search (`sigel.tl.pattern_search`) and the SVG test
(`sigel.tl.svg`) image their pseudo-genes and controls here, normalised
with the real genes' library sizes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import tissue
from .._validate import SigelInputError

LIB_COLUMN = "_sigel_library_size"


def pseudo_images(adata, counts, names, settings: dict, *, library_size=None):
    """Gene images of simulated genes on the grid of a model's training images.

    Parameters
    ----------
    adata
        The tissue the counts were simulated on (same spots, same order);
        supplies coordinates.
    counts
        Spots x pseudo-genes counts (sparse or dense).
    names
        Pseudo-gene names (one per column).
    settings
        ``GeneImages.settings`` of the model's images (``model.images_.settings``).
    library_size
        Per-spot library size of the *real* genes (default: the library size
        the model's images used: ``obs[settings['library_size_key']]`` or the
        row sums of ``adata``'s counts), so pseudo-genes are normalised
        exactly as the real genes were.

    Returns
    -------
    GeneImages
        One image per pseudo-gene (none is filtered out).

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, seed=0)
    >>> im = sigel.GeneImages.from_anndata(ad)
    >>> y = sigel.sim.homogeneous(ad.X, 2, seed=0).reshape(ad.n_obs, -1)
    >>> pim = sigel.sim.pseudo_images(ad, y, [f"c{i}" for i in range(40)], im.settings)
    >>> pim.shape == im.shape
    True
    """
    import anndata as ad

    from ..data import GeneImages

    opts = GeneImages.image_options(settings)
    if library_size is None:
        library_size = real_library_size(adata, settings)
    C = sp.csr_matrix(counts, dtype=np.float32) if sp.issparse(counts) else \
        sp.csr_matrix(np.asarray(counts, dtype=np.float32))
    if C.shape[0] != adata.n_obs:
        raise SigelInputError(f"pseudo-gene counts have {C.shape[0]} spots; the tissue has {adata.n_obs}")
    spatial_key = opts.get("spatial_key", "spatial")
    cols = [c for c in ("array_row", "array_col", "x", "y") if c in adata.obs]
    obs = adata.obs[cols].copy()
    obs[LIB_COLUMN] = np.asarray(library_size, dtype=np.float64)
    tmp = ad.AnnData(X=C, obs=obs, var=pd.DataFrame(index=pd.Index([str(n) for n in names])))
    if spatial_key in adata.obsm:
        tmp.obsm[spatial_key] = np.asarray(adata.obsm[spatial_key])
    # pseudo-gene values are drawn here (depth-scaled permutations need not be whole numbers)
    opts.update(layer=None, library_size_key=LIB_COLUMN, min_spots=0, exclude_prefixes=(), counts=False)
    # same library sizes -> same target sum (their median) as the real genes' images
    return GeneImages.from_anndata(tmp, **opts)


def real_library_size(adata, settings: dict) -> np.ndarray:
    """Library size per spot as the model's images computed it."""
    key = settings.get("library_size_key")
    if key is not None and key != LIB_COLUMN:
        if key not in adata.obs:
            raise SigelInputError(f"the model's images used adata.obs[{key!r}] as library size; it is missing")
        return tissue.library_size(adata, library_size_key=key)
    return tissue.library_size(adata, settings.get("layer"))
