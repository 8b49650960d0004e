"""Small named validators: each error names the parameter, the value and what was expected;
and the coercion of values to plain Python / JSON types."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd


class SigelInputError(ValueError):
    """Raised for bad user input (shapes, values, missing keys)."""


def assert_positive(name: str, value, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        rel = ">= 0" if allow_zero else "> 0"
        raise SigelInputError(f"`{name}` must be {rel}; got {value!r}")


def assert_in_range(name: str, value, lo, hi) -> None:
    if not (lo <= value <= hi):
        raise SigelInputError(f"`{name}` must be in [{lo}, {hi}]; got {value!r}")


def assert_one_of(name: str, value, options: Iterable) -> None:
    options = list(options)
    if value not in options:
        raise SigelInputError(f"`{name}` must be one of {options}; got {value!r}")


def assert_key_in(name: str, key, mapping, where: str) -> None:
    if key not in mapping:
        avail = list(mapping.keys()) if hasattr(mapping, "keys") else list(mapping)
        raise SigelInputError(f"{name} {key!r} not found in {where}; available: {avail[:20]}")


def assert_unique_names(names, what: str = "gene names") -> None:
    idx = pd.Index(names)
    if idx.has_duplicates:
        dup = idx[idx.duplicated()].unique().tolist()
        raise SigelInputError(
            f"duplicated {what}: {dup[:10]}{' ...' if len(dup) > 10 else ''} "
            f"({len(dup)} names); make them unique (e.g. adata.var_names_make_unique())"
        )


def assert_finite_nonnegative(values: np.ndarray, what: str = "expression values") -> None:
    """Values must be finite and >= 0 (works on the data array of a sparse matrix)."""
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        n = int(np.size(values) - np.isfinite(values).sum())
        raise SigelInputError(f"{what} contain {n} NaN or infinite entries")
    if values.min() < 0:
        raise SigelInputError(f"{what} contain negative entries (min {values.min():g}); expected counts or non-negative values")


def as_coordinates(coords, n_obs: int, what: str = "coordinates") -> np.ndarray:
    """Check an (n_obs, 2) numeric coordinate array and return it as float64."""
    try:
        arr = np.asarray(coords)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise SigelInputError(f"{what} could not be read as an array: {e}") from e
    if arr.dtype.kind not in "biuf":
        raise SigelInputError(f"{what} must be numeric; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise SigelInputError(f"{what} must have shape (n_spots, 2); got {arr.shape}")
    arr = arr[:, :2]
    if arr.shape[0] != n_obs:
        raise SigelInputError(f"{what} have {arr.shape[0]} rows but the count matrix has {n_obs} spots")
    if not np.all(np.isfinite(arr)):
        raise SigelInputError(f"{what} contain NaN or infinite values")
    return arr


def as_int(name: str, value, *, allow_none: bool = False):
    """``value`` as a Python int, refusing strings, bools and non-integral numbers (naming ``name``).

    Integral floats (``10.0``, e.g. from R's numeric vectors) are accepted and
    converted; ``2.5`` is refused rather than truncated.
    """
    if value is None:
        if allow_none:
            return None
        raise SigelInputError(f"`{name}` must be an integer; got None")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise SigelInputError(f"`{name}` must be an integer; got {value!r} ({type(value).__name__})")
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value) or float(value) != int(value):
            raise SigelInputError(f"`{name}` must be an integer; got {value!r} (not a whole number)")
    return int(value)


def as_real(name: str, value, *, allow_none: bool = False):
    """``value`` as a finite Python float, refusing strings and bools (naming ``name``)."""
    if value is None:
        if allow_none:
            return None
        raise SigelInputError(f"`{name}` must be a number; got None")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise SigelInputError(f"`{name}` must be a number; got {value!r} ({type(value).__name__})")
    if not np.isfinite(value):
        raise SigelInputError(f"`{name}` must be finite; got {value!r}")
    return float(value)


SEED_LIMIT = 2**32


def as_seed(name: str, value, *, allow_none: bool = True):
    """A random seed: ``None`` (when allowed) or an integer in ``[0, 2**32)``."""
    if value is None and allow_none:
        return None
    s = as_int(name, value)
    if not 0 <= s < SEED_LIMIT:
        raise SigelInputError(f"`{name}` must be in [0, 2**32); got {s}")
    return s


def jsonable(obj):
    """Convert numpy scalars/arrays, NaN and tuples into plain JSON values (NaN -> null).

    Parameters
    ----------
    obj
        A value, or a dict / list / tuple of values (converted recursively;
        dict keys become strings).

    Returns
    -------
    object
        The same structure made of plain Python values.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if not math.isfinite(f) else f
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj
