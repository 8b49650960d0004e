"""A self-contained HTML report of a fitted model (figures embedded as PNG)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _layout_figure(model):
    """2-D PCA layout of the gene embeddings coloured by hard context."""
    import matplotlib.pyplot as plt

    Z = model.embeddings_.to_numpy(np.float64)
    Z = Z - Z.mean(0)
    _, _, vt = np.linalg.svd(Z, full_matrices=False)
    xy = Z @ vt[:2].T
    ctx = model.contexts_["context"].to_numpy()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=ctx, cmap="tab20", s=4, alpha=0.7, linewidths=0)
    ax.set_xlabel("PC1 of gene embeddings")
    ax.set_ylabel("PC2")
    ax.set_title(f"{len(ctx):,} genes coloured by context")
    fig.colorbar(sc, ax=ax, label="context")
    return fig


def _history_figure(history: pd.DataFrame):
    import matplotlib.pyplot as plt

    loss_cols = [c for c in history.columns if c.startswith("loss")]
    health = [c for c in ("erank", "r2_detection") if c in history and history[c].notna().any()]
    fig, axes = plt.subplots(1, 3 if health else 2, figsize=(13.5 if health else 9, 3.2))
    for c in loss_cols:
        axes[0].plot(history.index + 1, history[c], label=c)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    if "label_change" in history:
        axes[1].plot(history.index + 1, history["label_change"], marker="o", ms=3)
        axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("fraction of genes changing context")
    if health:
        # collapse (effective rank of the vectors) and sampling noise (detection rate read off them)
        ax = axes[2]
        if "erank" in health:
            ax.plot(history.index + 1, history["erank"], marker="o", ms=3, color="C0")
            ax.set_ylabel("effective rank", color="C0")
        if "r2_detection" in health:
            ax2 = ax.twinx()
            ax2.plot(history.index + 1, history["r2_detection"], marker="s", ms=3, color="C3")
            ax2.set_ylabel("detection-rate R² (low is good)", color="C3")
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def _context_maps_figure(model, n_show: int = 12):
    from . import tl
    from .pl._grid import image_grid

    maps = tl.context_maps(model)
    sizes = model.contexts_["context"].value_counts()
    show = [k for k in sizes.index[:n_show] if f"context_{k}" in maps]  # maps are keyed 'context_<k>'
    return image_grid([maps[f"context_{k}"] for k in show], [f"context {k} ({sizes[k]} genes)" for k in show],
                      ncols=6, cmap="viridis", panel_size=2.1, vmin=None)


def write_report(model, path, *, title: str = "sigel report", n_example_genes: int = 12) -> Path:
    """Write a self-contained HTML page describing a fitted `SIGEL` model.

    Shows example gene images (the most confident gene of the largest
    contexts), the context maps of the largest contexts, a 2-D layout of the
    gene embeddings coloured by context and the training curves.

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`.
    path
        Output file (``.html``).
    title
        Page title.
    n_example_genes
        Number of example gene images.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from . import pl
    from ._validate import SigelInputError

    if getattr(model, "contexts_", None) is None:
        raise SigelInputError("write_report needs a fitted SIGEL model; call fit() first")
    if getattr(model, "images_", None) is None:
        raise SigelInputError(
            "write_report draws the model's training images, and this model has none (a model loaded from disk "
            "does not keep them): set model.images_ = model.images_for(adata) with the data it was fitted on")
    path = Path(path)
    ctx = model.contexts_
    sizes = ctx["context"].value_counts()
    examples = []
    for k in sizes.index:
        sub = ctx[ctx["context"] == k]
        examples.append(sub["confidence"].idxmax())
        if len(examples) >= n_example_genes:
            break
    figs = [
        ("Example gene images (most confident gene of the largest contexts)",
         _png(pl.gene_images(model.images_, examples, titles=[f"{g} (ctx {ctx.loc[g, 'context']})" for g in examples]))),
        ("Context maps: membership-weighted mean image of each context's genes", _png(_context_maps_figure(model))),
        ("Gene embedding layout", _png(_layout_figure(model))),
        ("Training curves", _png(_history_figure(model.history_))),
    ]
    im = model.images_
    summary = [
        ("genes embedded", f"{len(model.embeddings_):,}"),
        ("embedding dimension", model.embeddings_.shape[1]),
        ("contexts", model.memberships_.shape[1]),
        ("image", f"{im.height}×{im.width} px, {int(im.mask.sum()):,} in tissue ({im.settings.get('geometry')})"),
        ("epochs", len(model.history_)),
        ("model", html.escape(repr(model))),
    ]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v}</td></tr>" for k, v in summary)
    top = sizes.head(15)
    ctx_rows = "".join(
        f"<tr><td>{k}</td><td>{n}</td><td>{html.escape(', '.join(ctx[ctx['context'] == k].sort_values('confidence', ascending=False).index[:8]))}</td></tr>"
        for k, n in top.items()
    )
    body = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{b}'/>" for t, b in figs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:90%}}
img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>SIGEL gene embeddings (Li et al., Genome Biology 26:287, 2025), computed with sigel.</p>
<table>{rows}</table>
<h2>Largest contexts</h2><table><tr><th>context</th><th>genes</th><th>most confident genes</th></tr>{ctx_rows}</table>
{body}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
