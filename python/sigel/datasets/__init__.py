"""Data sets: the bundled mouse olfactory bulb and a synthetic tissue generator."""
from ._mob import CITATION as MOB_CITATION
from ._mob import extdata_dir, mouse_olfactory_bulb
from ._synthetic import FAMILIES, family_patterns, synthetic_tissue

__all__ = ["mouse_olfactory_bulb", "synthetic_tissue", "family_patterns", "FAMILIES", "extdata_dir", "MOB_CITATION"]
