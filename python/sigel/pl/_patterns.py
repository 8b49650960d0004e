"""Plots for pattern detection: designated-pattern search, spatially variable genes, method comparison."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._validate import SigelInputError
from ._grid import image_grid

__all__ = ["pattern_search", "svg", "compare_svg"]


def _table(result, key: str, what: str):
    """The result table (and the uns entry) of an AnnData or a DataFrame."""
    if isinstance(result, pd.DataFrame):
        return result, {}
    uns = getattr(result, "uns", None)
    if uns is None or key not in uns:
        raise SigelInputError(f"no {what} result in adata.uns[{key!r}]; run sigel.tl.{what}() first")
    entry = uns[key]
    if "table" in entry:
        return entry["table"], entry
    return None, entry


def pattern_search(result, images, *, pseudo_image=None, n_top: int = 5, key: str = "sigel_pattern_search",
                   cmap: str = "magma", panel_size: float = 2.0):
    """The designated pattern (mean pseudo-gene image) next to the best-matching genes.

    Parameters
    ----------
    result
        The AnnData passed to `sigel.tl.pattern_search` (reads
        ``uns[key]``), or the returned table (then give ``pseudo_image``).
    images
        `sigel.GeneImages` holding the genes (e.g. ``model.images_``).
    pseudo_image
        The pseudo-gene image (H x W); default from ``uns[key]``.
    n_top
        Number of top genes shown.
    key
        ``adata.uns`` key of the search.
    cmap, panel_size
        Colormap and inches per panel.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(60, seed=0)
    >>> model = sigel.SIGEL(epochs=2, embed_dim=8).fit(ad)                          # doctest: +SKIP
    >>> _ = sigel.tl.pattern_search(model, ad, sigel.sim.core(ad.obsm["spatial"]))  # doctest: +SKIP
    >>> fig = sigel.pl.pattern_search(ad, model.images_)                            # doctest: +SKIP
    """
    table, entry = _table(result, key, "pattern_search")
    if pseudo_image is None:
        pseudo_image = entry.get("pseudo_image")
    genes = [g for g in table.index[: int(n_top)] if g in images.genes]
    imgs = [images.image(g) for g in genes]
    titles = [f"{g}\ncos {table.loc[g, 'similarity']:.2f}" for g in genes]
    cmaps = [cmap] * len(genes)
    if pseudo_image is not None:
        imgs, titles, cmaps = [pseudo_image] + imgs, ["template\n(pseudo-gene)"] + titles, ["viridis"] + cmaps
    return image_grid(imgs, titles, ncols=max(len(imgs), 1), cmaps=cmaps, panel_size=panel_size)


def svg(result, images, *, n_top: int = 12, controls=None, key: str = "sigel_svg", ncols: int = 4,
        cmap: str = "magma", panel_size: float = 1.8):
    """Images of the most spatially variable genes with their scores and q-values, beside a control each.

    Parameters
    ----------
    result
        The table of `sigel.tl.svg`, or the AnnData it wrote to (columns
        ``adata.var['<key>_score' | '_qval']``).
    images
        `sigel.GeneImages` holding the genes.
    n_top
        Number of genes shown.
    controls
        Optional `sigel.GeneImages` of one homogeneous control per gene
        (`sigel.tasks.svg.control_images`, named ``'<gene> (control)'``):
        each gene is then drawn next to its control, in pairs, with the
        gene's and its control's colour scale shared.
    key
        Column prefix in ``adata.var``.
    ncols, cmap, panel_size
        Layout (panels per row; pairs count as two), colormap and inches per panel.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import sigel
    >>> ad = sigel.datasets.synthetic_tissue(60, seed=0)
    >>> model = sigel.SIGEL(epochs=2, embed_dim=8).fit(ad)   # doctest: +SKIP
    >>> tab = sigel.tl.svg(model, ad, n_null=5)              # doctest: +SKIP
    >>> fig = sigel.pl.svg(tab, model.images_)               # doctest: +SKIP
    """
    if isinstance(result, pd.DataFrame):
        table = result
    else:
        var = result.var
        if f"{key}_score" not in var:
            raise SigelInputError(f"no adata.var[{key + '_score'!r}]; run sigel.tl.svg() first")
        table = pd.DataFrame({"score": var[f"{key}_score"], "qval": var[f"{key}_qval"]}).dropna()
        table = table.sort_values("score", ascending=False)
    genes = [g for g in table.index[: int(n_top)] if g in images.genes]
    titles = [f"{g}\nscore {table.loc[g, 'score']:.1f}, q {table.loc[g, 'qval']:.2g}" for g in genes]
    if controls is None:
        return image_grid([images.image(g) for g in genes], titles, ncols=ncols, cmap=cmap,
                          panel_size=panel_size)
    missing = [g for g in genes if f"{g} (control)" not in controls.genes]
    if missing:
        raise SigelInputError(f"no control image for {missing[:5]}; make them with "
                              "sigel.tasks.svg.control_images(model, adata, genes)")
    imgs, heads = [], []
    for g, t in zip(genes, titles):
        a, c = images.image(g), controls.image(f"{g} (control)")
        hi = float(np.nanmax([np.nanmax(a), np.nanmax(c), 1e-12]))
        imgs += [a / hi, c / hi]
        heads += [t, "homogeneous control"]
    ncols = max(2, int(ncols) - int(ncols) % 2)
    return image_grid(imgs, heads, ncols=ncols, cmap=cmap, panel_size=panel_size, vmax=1.0)


def compare_svg(table, *, methods=("sigel", "sparkx", "moran"), panel_size: float = 3.0, highlight=None):
    """Pairwise scatter plots of the SVG rankings of `sigel.tl.compare_svg`, with Spearman's rho.

    Parameters
    ----------
    table
        The table of `sigel.tl.compare_svg` (columns ``<method>_rank``).
    methods
        Methods to compare (those present are used).
    panel_size
        Inches per panel.
    highlight
        Optional boolean mask / gene list drawn in a second colour (e.g. reference SVGs).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd, sigel
    >>> t = pd.DataFrame({"sigel_rank": [1, 2, 3], "moran_rank": [2, 1, 3]}, index=list("abc"))
    >>> fig = sigel.pl.compare_svg(t)
    """
    import matplotlib.pyplot as plt

    ms = [m for m in methods if f"{m}_rank" in table]
    pairs = [(a, b) for i, a in enumerate(ms) for b in ms[i + 1:]]
    if not pairs:
        raise SigelInputError(f"need at least two of the columns {[m + '_rank' for m in methods]}")
    hl = np.zeros(len(table), bool)
    if highlight is not None:
        h = np.asarray(highlight)
        hl = h.astype(bool) if h.dtype == bool and len(h) == len(table) else table.index.isin(list(h))
    fig, axes = plt.subplots(1, len(pairs), figsize=(panel_size * len(pairs), panel_size), squeeze=False)
    for ax, (a, b) in zip(axes.ravel(), pairs):
        x, y = table[f"{a}_rank"].to_numpy(), table[f"{b}_rank"].to_numpy()
        rho = pd.Series(x).corr(pd.Series(y), method="spearman")
        ax.scatter(x[~hl], y[~hl], s=4, c="0.6", lw=0)
        if hl.any():
            ax.scatter(x[hl], y[hl], s=8, c="tab:red", lw=0, label="highlighted")
        ax.set_xlabel(f"{a} rank")
        ax.set_ylabel(f"{b} rank")
        ax.set_title(f"Spearman rho = {rho:.2f}", fontsize=9)
    fig.tight_layout()
    return fig
