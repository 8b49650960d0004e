"""Plotting (matplotlib): gene images and, later, task results."""
from ._images import gene_images

__all__ = ["gene_images"]
