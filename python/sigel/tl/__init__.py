"""Tasks on the gene embeddings (``sigel.tl.<task>``).

Each task lives in its own module of ``sigel.tasks`` and depends only on the
data layer and the public methods of a fitted `sigel.SIGEL` model. Functions
are imported on first use, so optional dependencies (rpy2, SpaGCN) load only
when their task runs.
"""
from __future__ import annotations

import importlib

# public name -> module in sigel.tasks
_TASKS = {
    # contexts, semantics, gene-gene relations
    "context_maps": "contexts", "context_scores": "contexts",
    "neighbors": "neighbors",
    "enrichment": "enrichment", "read_gmt": "enrichment",
    "interactions": "interactions",
    "gene_clusters": "enrichment", "enrichment_summary": "enrichment", "fit_interactions": "interactions",
    "spot_embeddings": "spots",
    # pattern detection
    "pattern_search": "search", "svg": "svg", "compare_svg": "svg", "morans_i": "svg",
    # across samples
    "align": "align", "shifted_genes": "align", "altered_interactions": "align",
    "interaction_modules": "align", "housekeeping_genes": "align", "split_half_embeddings": "align",
    # imputation
    "impute": "impute", "impute_cv": "impute", "impute_metrics": "impute",
    "impute_summary": "impute",
    # spatial domains
    "prune_genes": "domains", "spatial_domains": "domains", "domain_scores": "domains",
}

__all__ = sorted(_TASKS)


def __getattr__(name: str):
    if name in _TASKS:
        mod = importlib.import_module(f"sigel.tasks.{_TASKS[name]}")
        return getattr(mod, name)
    raise AttributeError(f"module 'sigel.tl' has no attribute {name!r}")


def __dir__():
    return __all__
