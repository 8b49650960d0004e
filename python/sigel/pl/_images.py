"""Grid of gene images with the tissue mask."""
from __future__ import annotations

import numpy as np


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
    import matplotlib.pyplot as plt

    genes = list(images.genes[:12] if genes is None else np.atleast_1d(genes))
    n = len(genes)
    titles = genes if titles is None else list(titles)
    if ax is None:
        ncols = max(1, min(ncols, n))
        nrows = int(np.ceil(n / ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
        axes = axes.ravel()
    else:
        axes = np.atleast_1d(ax).ravel()
        fig = axes[0].figure
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    for i, a in enumerate(axes):
        a.set_axis_off()
        if i >= n:
            continue
        img = images.image(genes[i])
        a.imshow(np.ma.masked_invalid(img), cmap=cm, vmin=0, interpolation="nearest")
        a.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig
