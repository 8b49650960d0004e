"""Plotting (matplotlib): gene images and, later, task results."""
from ._images import gene_images
from ._contexts import context_maps, interaction_heatmap

__all__ = ["gene_images"]
__all__ += ["context_maps", "interaction_heatmap"]
from ._align import aligned_embeddings, altered_interactions, shifted_genes
__all__ += ["shifted_genes", "aligned_embeddings", "altered_interactions"]
from ._impute import impute_maps
__all__ += ["impute_maps"]
from ._patterns import compare_svg, pattern_search, svg
__all__ += ["pattern_search", "svg", "compare_svg"]
