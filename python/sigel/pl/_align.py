"""Plots of the cross-sample tasks: shift ranking, intermixed aligned layout, relation scatter."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._grid import axes_or_new


def _require_columns(table: pd.DataFrame, columns, name: str, producer: str) -> None:
    """Refuse a table that lacks one of ``columns``, naming the task whose result it should be."""
    for c in columns:
        if c not in table:
            raise ValueError(f"`{name}` lacks column {c!r}; pass the result of sigel.tl.{producer}()")


def shifted_genes(table: pd.DataFrame, *, n_label: int = 10, alpha: float = 0.05, ax=None,
                  figsize=(5.0, 3.6)):
    """Ranking plot of :func:`sigel.tl.shifted_genes`: score by rank.

    Anchors are grey, genes shifted at ``qval < alpha`` red, the others blue;
    the ``n_label`` top genes are named.

    Parameters
    ----------
    table
        The table returned by `sigel.tl.shifted_genes`.
    n_label
        Number of top genes labelled.
    alpha
        q-value cut-off for the highlight.
    ax
        Optional matplotlib axes.
    figsize
        Figure size when ``ax`` is None.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(60)]
    >>> ref = pd.DataFrame(rng.normal(size=(60, 6)), index=genes)
    >>> al = sigel.tl.align(ref, ref + rng.normal(scale=0.1, size=ref.shape), anchors=genes[30:])
    >>> fig = sigel.pl.shifted_genes(sigel.tl.shifted_genes(al))
    """
    _require_columns(table, ("rank", "score", "qval", "anchor"), "table", "shifted_genes")
    fig, ax = axes_or_new(ax, figsize)
    t = table.sort_values("rank")
    anc = t["anchor"].to_numpy(bool)
    sig = (t["qval"].to_numpy() < alpha) & ~anc
    rest = ~anc & ~sig
    x, y = t["rank"].to_numpy(), t["score"].to_numpy()
    ax.scatter(x[rest], y[rest], s=8, c="#4477aa", label="gene", lw=0)
    ax.scatter(x[anc], y[anc], s=8, c="#bbbbbb", label="anchor (held-out)", lw=0)
    ax.scatter(x[sig], y[sig], s=12, c="#cc3311", label=f"q < {alpha:g}", lw=0)
    # labels stacked in a column right of the top genes, joined by thin lines (no overlap)
    for i in range(min(int(n_label), len(t))):
        ax.annotate(str(t.index[i]), (x[i], y[i]), xytext=(0.1, 0.95 - 0.07 * i), textcoords="axes fraction",
                    fontsize=7, va="center", arrowprops=dict(arrowstyle="-", lw=0.4, color="0.55"))
    ax.set_xlabel("rank")
    ax.set_ylabel("shift score (robust z)")
    ax.set_title(f"{int(sig.sum())} genes shifted at q < {alpha:g}", fontsize=9)
    ax.legend(fontsize=7, frameon=False, markerscale=1.5)
    fig.tight_layout()
    return fig


def _layout(X: np.ndarray, layout: str, seed: int) -> np.ndarray:
    if layout == "pca":
        Xc = X - X.mean(0)
        U, S, _ = np.linalg.svd(Xc, full_matrices=False)
        return U[:, :2] * S[:2]
    if layout == "tsne":
        from sklearn.manifold import TSNE

        perp = float(min(30.0, max(5.0, (len(X) - 1) / 3.0)))
        return TSNE(2, perplexity=perp, init="pca", random_state=seed).fit_transform(X)
    raise ValueError(f"`layout` must be 'pca' or 'tsne'; got {layout!r}")


def aligned_embeddings(alignment, *, genes=None, highlight=None, n_highlight: int = 10, layout: str = "pca",
                       max_genes: int = 3000, labels=("reference", "query (aligned)"), seed: int = 0, ax=None,
                       figsize=(5.2, 4.6)):
    """2-D layout of both samples' gene vectors after alignment, intermixed.

    Reference vectors and aligned query vectors (held-out vectors for the
    anchors) of the shared genes are laid out together (PCA or t-SNE of the
    union). Well-aligned samples intermix; highlighted genes are joined
    reference -> query by a line (long lines = shifted genes).

    Parameters
    ----------
    alignment
        The result of `sigel.tl.align`.
    genes
        Genes shown (default: all shared genes, subsampled to ``max_genes``).
    highlight
        Genes joined by a line (default: the ``n_highlight`` most shifted).
    n_highlight
        Number of top shifted genes highlighted when ``highlight`` is None.
    layout
        ``'pca'`` (fast) or ``'tsne'`` (scikit-learn).
    max_genes
        Cap on the genes shown (random subset; highlighted genes are kept).
    labels
        Legend names of the two samples.
    seed
        Seeds the subset and t-SNE.
    ax
        Optional matplotlib axes.
    figsize
        Figure size when ``ax`` is None.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(60)]
    >>> ref = pd.DataFrame(rng.normal(size=(60, 6)), index=genes)
    >>> al = sigel.tl.align(ref, ref + rng.normal(scale=0.1, size=ref.shape), anchors=genes[30:])
    >>> fig = sigel.pl.aligned_embeddings(al)
    """
    from ..tasks.align import shifted_genes as _shifted

    shared = alignment.shared
    if highlight is None:
        highlight = _shifted(alignment).index[: int(n_highlight)] if n_highlight else []
    highlight = pd.Index([str(g) for g in np.atleast_1d(np.asarray(highlight, dtype=object))])
    highlight = highlight[highlight.isin(shared)]
    show = shared if genes is None else shared[shared.isin([str(g) for g in np.atleast_1d(genes)])]
    if len(show) > max_genes:
        rng = np.random.default_rng(seed)
        keep = rng.choice(len(show), size=int(max_genes), replace=False)
        show = show[np.sort(keep)].union(highlight, sort=False)
    show = show.union(highlight, sort=False)
    R = alignment.reference.loc[show].to_numpy()
    Q = alignment.heldout.loc[show].to_numpy()
    Y = _layout(np.vstack([R, Q]), layout, seed)
    n = len(show)
    fig, ax = axes_or_new(ax, figsize)
    ax.scatter(Y[:n, 0], Y[:n, 1], s=6, c="#4477aa", alpha=0.6, lw=0, label=labels[0])
    ax.scatter(Y[n:, 0], Y[n:, 1], s=6, c="#ee7733", alpha=0.6, lw=0, label=labels[1])
    pos = pd.Series(np.arange(n), index=show)
    for g in highlight:
        i = int(pos[g])
        ax.plot([Y[i, 0], Y[n + i, 0]], [Y[i, 1], Y[n + i, 1]], c="#cc3311", lw=0.8)
        ax.scatter([Y[n + i, 0]], [Y[n + i, 1]], s=14, c="#cc3311", lw=0)
        ax.annotate(str(g), (Y[n + i, 0], Y[n + i, 1]), xytext=(3, 2), textcoords="offset points", fontsize=7)
    ax.set_xlabel(f"{layout.upper()} 1")
    ax.set_ylabel(f"{layout.upper()} 2")
    ax.set_title(f"{n:,} genes, {alignment.n_anchors} anchors ({alignment.method})", fontsize=9)
    ax.legend(fontsize=7, frameon=False, markerscale=2)
    fig.tight_layout()
    return fig


def altered_interactions(pairs: pd.DataFrame, *, n_highlight: int = 20, n_label: int = 8, alpha: float = 0.05,
                         labels=("reference", "query"), ax=None, figsize=(4.6, 4.4)):
    """Relation strength in condition A vs B (cosine per pair), top altered pairs highlighted.

    Parameters
    ----------
    pairs
        The table from `sigel.tl.altered_interactions` (``top=None`` shows
        every tested pair).
    n_highlight
        Top-ranked pairs drawn in red.
    n_label
        Top pairs labelled ``geneA-geneB``.
    alpha
        Pairs with ``qval < alpha`` are drawn in orange.
    labels
        Axis names of the two conditions.
    ax
        Optional matplotlib axes.
    figsize
        Figure size when ``ax`` is None.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(60)]
    >>> ref = pd.DataFrame(rng.normal(size=(60, 6)), index=genes)
    >>> al = sigel.tl.align(ref, ref + rng.normal(scale=0.1, size=ref.shape), anchors=genes[30:])
    >>> fig = sigel.pl.altered_interactions(sigel.tl.altered_interactions(al, top=None))
    """
    _require_columns(pairs, ("cos_reference", "cos_query", "rank", "qval"), "pairs", "altered_interactions")
    fig, ax = axes_or_new(ax, figsize)
    t = pairs.sort_values("rank")
    x, y = t["cos_reference"].to_numpy(), t["cos_query"].to_numpy()
    top = np.arange(len(t)) < int(n_highlight)
    sig = (t["qval"].to_numpy() < alpha) & ~top
    rest = ~top & ~sig
    ax.scatter(x[rest], y[rest], s=4, c="#bbbbbb", lw=0, label="pair")
    ax.scatter(x[sig], y[sig], s=6, c="#ee7733", lw=0, label=f"q < {alpha:g}")
    ax.scatter(x[top], y[top], s=12, c="#cc3311", lw=0, label=f"top {int(top.sum())}")
    lo = float(np.nanmin(np.r_[x, y])) if len(x) else -1.0
    ax.plot([lo, 1], [lo, 1], c="k", lw=0.6, ls="--")
    for i in range(min(int(n_label), len(t))):
        ax.annotate(f"{t['gene_a'].iat[i]}-{t['gene_b'].iat[i]}", (x[i], y[i]), xytext=(3, 2),
                    textcoords="offset points", fontsize=6)
    ax.set_xlabel(f"cosine in {labels[0]}")
    ax.set_ylabel(f"cosine in {labels[1]} (aligned)")
    ax.legend(fontsize=7, frameon=False, markerscale=1.5)
    fig.tight_layout()
    return fig
