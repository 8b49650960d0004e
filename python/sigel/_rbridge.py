"""Calls into the R package ``sigel`` through rpy2 (optional dependency, imported lazily).

Used by the ``"r"`` engine of `sigel.sim` (``simulatePattern()``,
``simulateHomogeneous()``) and by `sigel.tl.compare_svg` (``sigelSparkX()``).
Works from plain Python (rpy2 starts an embedded R) and nested inside an R
session (R -> reticulate -> Python). In the nested case rpy2 must not be used:
it releases the GIL around R calls and the process aborts when R's event loop
re-enters Python. There the R package registers its engine function
(:func:`register_r_engine`, done by ``sigel:::.sigel_py()``) and every R call
goes back through reticulate with plain arguments (numpy arrays, numbers,
strings, dicts); see ``R/r-engine.R``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

_INSTALL = (
    "the R engine needs rpy2 and the R package 'sigel': "
    "pip install 'rpy2==3.6.6' 'rpy2-rinterface==3.6.5' 'rpy2-robjects==3.6.6' "
    "(or pip install 'sigel[r]'), then install the R package (bash scripts/setup.sh, "
    "or R CMD INSTALL . from the source tree)"
)
_cache: dict = {}


def register_r_engine(fn) -> None:
    """Route R-engine calls through ``fn`` (the R package's ``.sigel_r_engine``, via reticulate).

    Called by the R package when it imports the backend into an R session.
    It also turns off tqdm's monitor thread: inside R the main thread holds
    the GIL between calls, and once a progress bar had started that thread,
    every later call into the backend ran many times slower (an R test that
    takes 5 s took 180 s after the fits of another test file had shown bars).
    The monitor only adjusts the refresh rate of stalled bars.

    It also keeps numba's parallel code (scanpy's Moran's I, used by
    ``prune_genes`` and ``morans_i``) off OpenMP: see
    :func:`_numba_off_openmp`.
    """
    _cache["engine"] = fn
    try:
        import tqdm

        tqdm.tqdm.monitor_interval = 0
    except ImportError:  # pragma: no cover - tqdm is a dependency
        pass
    _numba_off_openmp()


def _numba_off_openmp() -> None:
    """Make numba run its parallel loops on its own thread pool (``workqueue``), not on OpenMP.

    R loads the system OpenMP runtime (``libgomp.so.1``) at start-up, before
    the R package can ask idle OpenMP threads to sleep (``OMP_WAIT_POLICY``),
    and torch, whose own copy has the same name, then shares it. Once
    numba's OpenMP layer had run a parallel loop in that runtime, every torch
    call with 2 threads slowed down many times over: on 2 cores
    ``sigelSVG`` on 60 genes took 12 s after ``sigelPruneGenes`` instead of
    0.2 s, and the R test suite took 226 s instead of 67 s with 1 thread.
    With numba's ``workqueue`` layer both stay fast. A user's own choice
    (``NUMBA_THREADING_LAYER``) is kept. Called when R imports the backend.
    """
    import os
    import sys

    if os.environ.get("NUMBA_THREADING_LAYER"):
        return
    os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    numba = sys.modules.get("numba")
    if numba is not None:  # already imported: numba picks its layer at the first parallel launch
        try:
            numba.config.THREADING_LAYER = "workqueue"
        except AttributeError:  # pragma: no cover - numba without a config module
            pass


def _embedded_engine():
    """The registered reticulate engine, or ``None`` when Python is not running inside R."""
    return _cache.get("engine")


def _plain_dgc(X) -> dict:
    """scipy (spots x genes) -> the CSC arrays of the genes x spots matrix, as plain arrays."""
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sort_indices()
    return dict(indices=X.indices.astype(np.int32), indptr=X.indptr.astype(np.int32), data=X.data,
                dims=[int(X.shape[1]), int(X.shape[0])])


def _template_values(template):
    """A template as a :class:`pandas.Categorical` (labels with their levels) or a numpy array."""
    if isinstance(template, pd.Series):
        return pd.Categorical(template) if isinstance(template.dtype, pd.CategoricalDtype) else template.to_numpy()
    return template if isinstance(template, pd.Categorical) else np.asarray(template)


def _plain_template(template):
    arr = _template_values(template)
    if isinstance(arr, pd.Categorical):
        return dict(levels=[str(c) for c in arr.categories], codes=np.asarray(arr.codes, np.int32))
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    if arr.dtype.kind == "b":
        return arr
    return arr.astype(str).tolist() if arr.ndim == 1 else arr.astype(str)


def _plain_vec(x):
    return None if x is None else np.asarray(x, dtype=np.float64).ravel()


def require_rpy2():
    """Import ``rpy2.robjects`` or raise ImportError naming the install command."""
    try:
        import rpy2.robjects as ro  # noqa: F401
    except Exception as e:  # ImportError, or R not found by rpy2
        raise ImportError(f"{_INSTALL} ({type(e).__name__}: {e})") from e
    return ro


def r_available() -> bool:
    """Whether the R engine can be used: inside R (registered engine), or rpy2 + the R package (never raises)."""
    if _embedded_engine() is not None:
        return True
    try:
        sigel_r()
        return True
    except Exception:
        return False


def sigel_r():
    """The R package ``sigel`` as an rpy2 package object (cached)."""
    if "pkg" in _cache:
        return _cache["pkg"]
    require_rpy2()
    from rpy2.robjects.packages import PackageNotInstalledError, importr

    try:
        pkg = importr("sigel")
    except PackageNotInstalledError as e:
        raise ImportError(_INSTALL) from e
    _cache["pkg"] = pkg
    return pkg


def _np2r(a):
    """numpy array -> R vector/matrix (column-major, dims kept)."""
    import rpy2.robjects as ro
    from rpy2.robjects import numpy2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + numpy2ri.converter):
        return ro.conversion.get_conversion().py2rpy(np.asarray(a))


def _r2np(x) -> np.ndarray:
    import rpy2.robjects as ro
    from rpy2.robjects import numpy2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + numpy2ri.converter):
        return np.asarray(ro.conversion.get_conversion().rpy2py(x))


def to_r_dgc(X):
    """scipy (spots x genes) -> R ``dgCMatrix`` genes x spots (built from the CSR arrays)."""
    import rpy2.robjects as ro
    from rpy2.robjects.packages import importr

    Matrix = importr("Matrix")
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sort_indices()
    n_spots, n_genes = X.shape
    # CSR of spots x genes == CSC of genes x spots
    return Matrix.sparseMatrix(
        i=ro.IntVector(X.indices.astype(np.int32)), p=ro.IntVector(X.indptr.astype(np.int32)),
        x=ro.FloatVector(X.data), dims=ro.IntVector([n_genes, n_spots]), index1=False,
    )


def _template_r(template):
    import rpy2.robjects as ro

    arr = _template_values(template)
    if isinstance(arr, pd.Categorical):
        levels = [str(c) for c in arr.categories]
        return ro.FactorVector(ro.StrVector([levels[c] for c in arr.codes]), levels=ro.StrVector(levels))
    if arr.ndim == 2:
        if arr.dtype.kind == "b":
            return _np2r(arr.astype(bool))
        if arr.dtype.kind in "iuf":
            return _np2r(arr.astype(np.float64))
        return _np2r(arr.astype(str))
    if arr.dtype.kind == "b":
        return ro.BoolVector(arr.tolist())
    if arr.dtype.kind in "iu":
        return ro.IntVector(arr.astype(np.int64).tolist())
    if arr.dtype.kind == "f":
        return ro.FloatVector(arr.tolist())
    return ro.StrVector([str(v) for v in arr])


def _named(d: dict | None):
    import rpy2.robjects as ro

    if d is None:
        return ro.NULL
    v = ro.FloatVector([float(x) for x in d.values()])
    v.names = ro.StrVector([str(k) for k in d.keys()])
    return v


def _opt(x):
    import rpy2.robjects as ro

    if x is None:
        return ro.NULL
    return ro.FloatVector(np.asarray(x, dtype=np.float64).ravel().tolist())


def simulate_pattern_r(coords, template, *, counts=None, quantiles=None, means=None, taper=0.0, n_draws=1,
                       library_size=None, trend=None, seed=None, return_params=False):
    """`sigel.sim.pseudo_gene` through the R package's ``simulatePattern()`` (spots x draws)."""
    eng = _embedded_engine()
    if eng is not None:
        out = eng("simulate_pattern", dict(
            coords=np.asarray(coords, dtype=np.float64), template=_plain_template(template),
            counts=None if counts is None else _plain_dgc(counts),
            quantiles=None if quantiles is None else {str(k): float(v) for k, v in quantiles.items()},
            means=None if means is None else {str(k): float(v) for k, v in means.items()},
            taper=float(taper), n_draws=int(n_draws), library_size=_plain_vec(library_size),
            trend=_plain_vec(trend), seed=None if seed is None else int(seed), return_params=bool(return_params)))
        y = np.asarray(out["y"]).astype(np.int64).reshape(len(coords), int(n_draws), order="F")
        if not return_params:
            return y
        p = out["params"]
        regions = [str(r) for r in np.atleast_1d(p["regions"])]
        params = dict(
            regions=regions,
            region_means={r: float(v) for r, v in zip(regions, np.atleast_1d(p["region_means"]))},
            trend=tuple(float(v) for v in np.atleast_1d(p["trend"])),
            size_factors=np.atleast_1d(np.asarray(p["size_factors"], dtype=np.float64)),
            mu=np.atleast_1d(np.asarray(p["mu"], dtype=np.float64)),
            weights=np.asarray(p["weights"], dtype=np.float64),
        )
        return y, params
    import rpy2.robjects as ro

    pkg = sigel_r()
    res = pkg.simulatePattern(
        _np2r(np.asarray(coords, dtype=np.float64)), _template_r(template),
        counts=ro.NULL if counts is None else to_r_dgc(counts),
        quantiles=_named(quantiles), means=_named(means), taper=float(taper), n_draws=int(n_draws),
        library_size=_opt(library_size), trend=_opt(trend),
        seed=ro.NULL if seed is None else int(seed), return_params=bool(return_params),
    )
    y = _r2np(res).astype(np.int64).reshape(len(coords), int(n_draws), order="F")
    if not return_params:
        return y
    p = ro.r["attr"](res, "params")
    get = dict(zip(p.names, list(p)))
    regions = [str(r) for r in get["regions"]]
    params = dict(
        regions=regions,
        region_means={r: float(v) for r, v in zip(regions, _r2np(get["region_means"]))},
        trend=tuple(float(v) for v in _r2np(get["trend"])),
        size_factors=_r2np(get["size_factors"]).astype(np.float64),
        mu=_r2np(get["mu"]).astype(np.float64),
        weights=_r2np(get["weights"]).astype(np.float64),
    )
    return y, params


def simulate_homogeneous_r(X, n_draws, *, library_size=None, seed=None) -> np.ndarray:
    """`sigel.sim.homogeneous` through ``simulateHomogeneous()``: (spots x genes x draws)."""
    eng = _embedded_engine()
    if eng is not None:
        out = eng("simulate_homogeneous", dict(counts=_plain_dgc(X), n_draws=int(n_draws),
                                               library_size=_plain_vec(library_size),
                                               seed=None if seed is None else int(seed)))
        arr = np.asarray(out["y"])
    else:
        import rpy2.robjects as ro

        pkg = sigel_r()
        res = pkg.simulateHomogeneous(to_r_dgc(X), n_draws=int(n_draws), library_size=_opt(library_size),
                                      seed=ro.NULL if seed is None else int(seed))
        arr = _r2np(res)
    return arr.reshape(X.shape[0], X.shape[1], int(n_draws), order="F").astype(np.int64) \
        if arr.ndim != 3 else arr.astype(np.int64)


def sparkx_r(X, coords, *, genes=None) -> pd.DataFrame:
    """The R package's SPARK-X-style test (``sigelSparkX()``) on counts X (spots x genes)."""
    eng = _embedded_engine()
    if eng is not None:
        out = eng("sparkx", dict(counts=_plain_dgc(X), coords=np.asarray(coords, dtype=np.float64),
                                 genes=None if genes is None else [str(g) for g in genes]))
        df = pd.DataFrame({k: np.atleast_1d(v) for k, v in out["columns"].items()})
        df.index = pd.Index([str(g) for g in np.atleast_1d(out["genes"])], name="gene")
        return df
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    pkg = sigel_r()
    M = to_r_dgc(X)
    if genes is not None:
        M = ro.r("function(m, g) { rownames(m) <- g; m }")(M, ro.StrVector([str(g) for g in genes]))
    res = pkg.sigelSparkX(M, _np2r(np.asarray(coords, dtype=np.float64)))
    with localconverter(ro.default_converter + pandas2ri.converter):
        df = ro.conversion.get_conversion().rpy2py(res)
    df.index = pd.Index([str(g) for g in df.index], name="gene")
    return df
