"""Reading and writing results (downstream of the model and the tasks).

* `sigel.io.model_dir`: saved model directories and the AnnData writer, the
  work behind ``SIGEL.save`` / ``SIGEL.load`` / ``SIGEL.write_to``
  (``save_model``, ``load_model``, ``write_to_anndata``);
* `sigel.io.results`: per-gene results in HDF5, written chunk by chunk
  (``write_results_h5``, ``transform_to_h5``, ``read_results_h5``);
* `sigel.io.r`: the readers and writers behind the R package's
  ``readSigelH5AD()`` / ``writeSigelH5AD()`` / ``readSpaceRanger()``.
"""
from .model_dir import load_model, save_model, write_to_anndata
from .results import read_results_h5, transform_to_h5, write_results_h5

__all__ = ["load_model", "read_results_h5", "save_model", "transform_to_h5", "write_results_h5",
           "write_to_anndata"]
