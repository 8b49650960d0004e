"""Grid of gene images with the tissue mask."""
from __future__ import annotations

import numpy as np

from ._grid import image_grid


def gene_images(images, genes=None, *, ncols: int = 6, cmap: str = "magma", panel_size: float = 2.0,
                titles=None, ax=None):
    """Plot a grid of gene images; pixels outside the tissue are left blank.

    Parameters
    ----------
    images
        A `sigel.GeneImages`.
    genes
        Gene names to show (default: the first 12).
    ncols
        Panels per row.
    cmap
        Matplotlib colormap for expression (background stays white).
    panel_size
        Inches per panel.
    titles
        Optional panel titles (default: gene names).
    ax
        Optional sequence of axes to draw into (one per gene).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(20, seed=1)
    >>> im = sigel.GeneImages.from_anndata(ad)
    >>> fig = sigel.pl.gene_images(im, im.genes[:4])
    """
    genes = list(images.genes[:12] if genes is None else np.atleast_1d(genes))
    titles = genes if titles is None else list(titles)
    return image_grid([images.image(g) for g in genes], titles, ncols=ncols, cmap=cmap, panel_size=panel_size,
                      ax=ax)
