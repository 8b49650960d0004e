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
               vmin=0.0, vmax=None, cmaps=None):
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
        Inches per panel (its width; its height follows the images' aspect,
        so wide tissue strips leave no empty bands, plus room for the titles).
    ax
        Optional axes to draw into (one per image); a new figure otherwise.
    vmin
        Lower colour limit (``None``: the image's minimum).
    vmax
        Upper colour limit (``None``: the image's maximum).
    cmaps
        Optional per-image colormaps (overrides ``cmap``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = len(images)
    if ax is None:
        ncols = max(1, min(int(ncols), max(n, 1)))
        nrows = max(int(np.ceil(n / ncols)), 1)
        aspect = float(np.median([np.shape(m)[0] / max(np.shape(m)[1], 1) for m in images])) if n else 1.0
        lines = max([str(t).count("\n") + 1 for t in titles] or [1])
        row = panel_size * min(max(aspect, 0.25), 4.0) + 0.15 * lines + 0.1  # image + title lines (inches)
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, row * nrows), squeeze=False)
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
