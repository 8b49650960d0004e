"""Reading and writing results (downstream of the model and the tasks).

* `sigel.io.results`: per-gene results in HDF5, written chunk by chunk
  (``write_results_h5``, ``transform_to_h5``, ``read_results_h5``);
* `sigel.io.r`: the readers and writers behind the R package's
  ``readSigelH5AD()`` / ``writeSigelH5AD()`` / ``readSpaceRanger()``.
"""
from .results import read_results_h5, transform_to_h5, write_results_h5

__all__ = ["read_results_h5", "transform_to_h5", "write_results_h5"]
