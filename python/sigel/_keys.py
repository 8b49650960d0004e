"""Key names used in AnnData and the one helper every task writes through."""
from __future__ import annotations

from ._settings import logger

EMBEDDING = "sigel"                 # adata.varm[...]: genes x D
MEMBERSHIPS = "sigel_contexts"      # adata.varm[...]: genes x K
CONTEXT = "sigel_context"           # adata.var[...]
CONFIDENCE = "sigel_confidence"     # adata.var[...]
UNS = "sigel"                       # adata.uns[...]: settings, history
CONTEXT_SCORES = "sigel_context_scores"  # adata.obsm[...]: spots x K
SPOTS = "sigel_spots"               # adata.obsm[...]: spots x D (spots projected on the gene vectors)
SVG = "sigel_svg"                   # adata.uns / var prefix
DOMAINS = "sigel_domain"            # adata.obs[...]


def store(adata, attr: str, key: str, value) -> None:
    """Write ``value`` into ``adata.<attr>[key]`` and log where it went."""
    getattr(adata, attr)[key] = value
    logger.info(f"added adata.{attr}[{key!r}]")
