"""The layouts shared by the plotting functions: one axes, or a grid of images."""
from __future__ import annotations

import numpy as np


def axes_or_new(ax, figsize):
    """``(figure, axes)``: the given matplotlib axes and its figure, or a new figure of ``figsize`` inches."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def image_grid(images, titles, *, ncols: int = 6, cmap: str = "magma", panel_size: float = 2.0, ax=None,
               vmin=0.0, vmax=None, cmaps=None, height_ratio: float = 1.0):
    """Draw 2-D images in a grid of panels; NaN pixels (outside the tissue) stay white.

    Parameters
    ----------
    images
        Sequence of 2-D arrays (NaN = not tissue).
    titles
        One title per image.
    ncols
        Panels per row (fewer when there are fewer images).
    cmap
        Matplotlib colormap.
    panel_size
        Inches per panel.
    ax
        Optional axes to draw into (one per image); a new figure otherwise.
    vmin
        Lower colour limit (``None``: the image's minimum).
    vmax
        Upper colour limit (``None``: the image's maximum).
    cmaps
        Optional per-image colormaps (overrides ``cmap``).
    height_ratio
        Panel height relative to its width (room for two-line titles).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = len(images)
    if ax is None:
        ncols = max(1, min(int(ncols), max(n, 1)))
        nrows = max(int(np.ceil(n / ncols)), 1)
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * height_ratio * nrows),
                                 squeeze=False)
        axes = axes.ravel()
    else:
        axes = np.atleast_1d(ax).ravel()
        fig = axes[0].figure
    for i, a in enumerate(axes):
        a.set_axis_off()
        if i >= n:
            continue
        cm = plt.get_cmap(cmaps[i] if cmaps is not None else cmap).with_extremes(bad="white")
        img = np.asarray(images[i], dtype=np.float64)
        a.imshow(np.ma.masked_invalid(img), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
        a.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig
