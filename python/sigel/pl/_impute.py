"""True versus imputed gene maps (panel imputation, `sigel.tl.impute`)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def impute_maps(imputed, genes=None, *, truth=None, spatial_key: str = "spatial", cmap: str = "magma",
                point_size: float | None = None, panel_size: float = 2.2, max_genes: int = 8):
    """Plot imputed gene maps on the target's cells, next to the measured maps when known.

    Parameters
    ----------
    imputed
        The AnnData returned by `sigel.tl.impute` (cells x genes, with
        ``obsm[spatial_key]``).
    genes
        Genes to show (default: the imputed genes with the highest
        confidence, at most ``max_genes``).
    truth
        Optional measured values of the same cells: an AnnData or a
        DataFrame (cells x genes, matched by names). Adds a "measured" row
        and the per-gene PCC in the titles.
    spatial_key
        ``obsm`` key of the cell coordinates.
    cmap
        Matplotlib colormap.
    point_size
        Marker size (default: from the number of cells).
    panel_size
        Inches per panel.
    max_genes
        Genes shown when ``genes`` is None.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import sigel
    >>> ref = sigel.datasets.synthetic_tissue(60, shape=(16, 16), seed=1)
    >>> tgt = sigel.datasets.synthetic_tissue(60, shape=(24, 24), seed=1, sample_seed=2)
    >>> model = sigel.SIGEL(epochs=2).fit(ref, seed=0)  # doctest: +SKIP
    >>> out = sigel.tl.impute(model, tgt[:, :40], method="knn")  # doctest: +SKIP
    >>> fig = sigel.pl.impute_maps(out, truth=tgt)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from .. import tissue
    from .._validate import SigelInputError

    xy = tissue.coordinates(imputed, spatial_key)
    if genes is None:
        var = imputed.var
        cand = var[var["imputed"]] if "imputed" in var else var
        if "confidence" in cand:
            cand = cand.sort_values("confidence", ascending=False)
        genes = list(cand.index[:max_genes])
    genes = [str(g) for g in np.atleast_1d(genes)]
    missing = [g for g in genes if g not in imputed.var_names]
    if missing:
        raise SigelInputError(f"genes not in the imputed AnnData: {missing[:10]}")
    T = None
    if truth is not None:
        if hasattr(truth, "var_names"):
            X = truth.X.toarray() if hasattr(truth.X, "toarray") else np.asarray(truth.X)
            truth = pd.DataFrame(X, index=truth.obs_names.astype(str), columns=truth.var_names.astype(str))
        T = truth.reindex(index=imputed.obs_names.astype(str))
    rows = 2 if T is not None else 1
    n = len(genes)
    fig, axes = plt.subplots(rows, n, figsize=(panel_size * n, panel_size * rows), squeeze=False)
    s = point_size if point_size is not None else max(1.0, 6000.0 / max(len(xy), 1))
    for j, g in enumerate(genes):
        v = np.asarray(imputed[:, g].X).ravel()
        ax = axes[0, j]
        ax.scatter(xy[:, 0], xy[:, 1], c=v, s=s, cmap=cmap, linewidths=0)
        title = g
        if "confidence" in imputed.var and np.isfinite(imputed.var.loc[g, "confidence"]):
            title += f"\nconf {imputed.var.loc[g, 'confidence']:.2f}"
        if T is not None and g in T.columns:
            t = T[g].to_numpy(dtype=float)
            ok = np.isfinite(t)
            if ok.sum() > 2 and np.std(t[ok]) > 0 and np.std(v[ok]) > 0:
                title += f", PCC {np.corrcoef(t[ok], v[ok])[0, 1]:.2f}"
            axes[1, j].scatter(xy[:, 0], xy[:, 1], c=t, s=s, cmap=cmap, linewidths=0)
        ax.set_title(title, fontsize=8)
        for r in range(rows):
            axes[r, j].set_aspect("equal")
            axes[r, j].invert_yaxis()
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
    axes[0, 0].set_ylabel("imputed", fontsize=8)
    if T is not None:
        axes[1, 0].set_ylabel("measured", fontsize=8)
    fig.tight_layout()
    return fig
