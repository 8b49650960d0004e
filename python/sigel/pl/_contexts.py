"""Plots of contexts (tissue maps) and of predicted gene-gene interaction strength."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._validate import SigelInputError
from ._grid import axes_or_new, image_grid


def context_maps(model_or_maps, images=None, *, contexts=None, ncols: int = 6, cmap: str = "viridis",
                 panel_size: float = 2.0, min_genes: int = 1, ax=None):
    """Plot every context's map on the tissue (a grid of panels).

    Parameters
    ----------
    model_or_maps
        A fitted `sigel.SIGEL`, or the dict returned by
        `sigel.tl.context_maps`.
    images
        Images or AnnData to build the maps from (see `sigel.tl.context_maps`).
    contexts
        Subset of contexts to show.
    ncols
        Panels per row.
    cmap
        Matplotlib colormap (off-tissue pixels stay white).
    panel_size
        Inches per panel.
    min_genes
        Skip contexts with fewer genes.
    ax
        Optional sequence of axes (one per context).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, sigel
    >>> maps = {"context_0": np.random.default_rng(0).random((8, 8)), "context_1": np.eye(8)}
    >>> fig = sigel.pl.context_maps(maps)
    """
    if isinstance(model_or_maps, dict):
        maps = model_or_maps
        if contexts is not None:
            from ..tasks.contexts import context_names

            want = context_names(contexts)
            maps = {k: maps[k] for k in want if k in maps}
    else:
        from ..tasks.contexts import context_maps as _maps

        maps = _maps(model_or_maps, images, contexts=contexts, min_genes=min_genes)
    names = list(maps)
    n = len(names)
    if n == 0:
        raise SigelInputError("no context maps to plot (no context has `min_genes` genes?)")
    return image_grid([maps[k] for k in names], names, ncols=ncols, cmap=cmap, panel_size=panel_size, ax=ax,
                      vmin=None)


def interaction_heatmap(strength, genes=None, *, cmap: str = "magma", annotate: bool = False,
                        cluster: bool = True, figsize=None, ax=None):
    """Heatmap of predicted interaction strength among a list of genes.

    Parameters
    ----------
    strength
        A genes x genes DataFrame (e.g. ``predictor.strength(genes)``) or an
        `InteractionPredictor` from `sigel.tl.fit_interactions` (then
        ``genes`` is required).
    genes
        Genes to show (with a predictor).
    cmap
        Matplotlib colormap.
    annotate
        Write the scores in the cells.
    cluster
        Order genes by average-linkage clustering of their score profiles.
    figsize
        Figure size (default grows with the number of genes).
    ax
        Optional axes.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> m = pd.DataFrame(np.random.default_rng(0).random((4, 4)), index=list("abcd"), columns=list("abcd"))
    >>> fig = sigel.pl.interaction_heatmap((m + m.T) / 2)
    """
    import matplotlib.pyplot as plt

    if not isinstance(strength, pd.DataFrame):
        if genes is None:
            raise ValueError("`genes` is required when `strength` is a predictor")
        strength = strength.strength(genes)
    M = strength.to_numpy(np.float64)
    order = np.arange(len(M))
    if cluster and len(M) > 2:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import pdist

        F = np.where(np.isnan(M), 1.0, M)
        order = leaves_list(linkage(pdist(F), method="average"))
    S = strength.iloc[order, order]
    n = len(S)
    fig, ax = axes_or_new(ax, figsize or (max(3.0, 0.3 * n + 1.5), max(2.5, 0.3 * n + 1.0)))
    cm = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(S.to_numpy(np.float64)), cmap=cm, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels([str(c) for c in S.columns], rotation=90, fontsize=7)
    ax.set_yticklabels([str(c) for c in S.index], fontsize=7)
    if annotate:
        for i in range(n):
            for j in range(n):
                v = S.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="predicted interaction")
    fig.tight_layout()
    return fig
