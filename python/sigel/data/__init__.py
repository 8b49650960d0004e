"""Data layer: gene images built from spatial count matrices."""
from .images import GeneImages, detect_geometry, spot_pixels

__all__ = ["GeneImages", "detect_geometry", "spot_pixels"]
