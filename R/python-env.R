# The one place that decides which Python runs the backend and imports it.

.sigel_env <- new.env(parent = emptyenv())

#' Locate the Python interpreter of the sigel backend
#'
#' Looks, in order, at `options(sigel.python = )`, the environment variable
#' `SIGEL_PYTHON`, the project virtualenv recorded by the set-up
#' (`make setup` writes its path into the installed package), and a
#' reticulate virtualenv named `r-sigel` (made by [installSigel()]).
#'
#' @return `character(1)`: the path of the Python executable, or `NA` when
#'   none was found.
#' @examples
#' sigelPythonPath()
#' @export
sigelPythonPath <- function() {
    cands <- c(
        getOption("sigel.python", ""),
        Sys.getenv("SIGEL_PYTHON", ""),
        .recorded_python()
    )
    for (p in cands) {
        if (nzchar(p) && file.exists(p)) return(path.expand(p))
    }
    venv <- tryCatch(
        if (reticulate::virtualenv_exists("r-sigel"))
            reticulate::virtualenv_python("r-sigel") else "",
        error = function(e) ""
    )
    if (nzchar(venv) && file.exists(venv)) return(venv)
    NA_character_
}

.recorded_python <- function() {
    f <- system.file("python-path", package = "sigel")
    if (!nzchar(f)) return("")
    p <- trimws(readLines(f, n = 1L, warn = FALSE))
    if (length(p) == 0L) "" else p
}

.no_backend_message <- function() {
    paste0(
        "No Python backend for sigel was found.\n",
        "  * From a source checkout run `make setup` (creates .venv), or\n",
        "  * run sigel::installSigel() to create the 'r-sigel' virtualenv, or\n",
        "  * point to a Python with the backend: ",
        "Sys.setenv(SIGEL_PYTHON = '/path/to/python')."
    )
}

#' Is the sigel Python backend available?
#'
#' @return `logical(1)`; never raises.
#' @examples
#' sigelPythonAvailable()
#' @export
sigelPythonAvailable <- function() {
    ok <- tryCatch({
        .sigel_py()
        TRUE
    }, error = function(e) FALSE)
    ok
}

# Import the backend once (lazily); every call into Python goes through this.
# Import torch with RTLD_DEEPBIND (Linux) before anything else loads it.
# R has already loaded its own BLAS with global symbols (often the slow
# reference BLAS); without DEEPBIND, torch's calls to its bundled MKL
# `sgemm_` bind to R's BLAS instead, and training inside R runs 2-3x slower
# than in Python (measured: 4 epochs on 1,500 MOB genes, 17.6 s vs 5.6 s).
# Opt out with options(sigel.deepbind = FALSE).
.preload_torch <- function() {
    if (!isTRUE(getOption("sigel.deepbind", TRUE))) return(invisible(FALSE))
    code <- paste(
        "import os, sys",
        "if 'torch' not in sys.modules and hasattr(os, 'RTLD_DEEPBIND'):",
        "    _sigel_flags = sys.getdlopenflags()",
        "    sys.setdlopenflags(_sigel_flags | os.RTLD_DEEPBIND)",
        "    try:",
        "        import torch",
        "    finally:",
        "        sys.setdlopenflags(_sigel_flags)",
        sep = "\n")
    ok <- tryCatch({
        reticulate::py_run_string(code, local = TRUE)
        TRUE
    }, error = function(e) FALSE)
    invisible(ok)
}

.sigel_py <- function() {
    if (!is.null(.sigel_env$mod)) return(.sync_threads(.sigel_env$mod))
    # idle OpenMP threads sleep instead of spinning (read when torch loads)
    if (!nzchar(Sys.getenv("OMP_WAIT_POLICY"))) Sys.setenv(OMP_WAIT_POLICY = "PASSIVE")
    if (!nzchar(Sys.getenv("GOMP_SPINCOUNT"))) Sys.setenv(GOMP_SPINCOUNT = "10000")
    py <- sigelPythonPath()
    if (is.na(py) && !reticulate::py_available(initialize = FALSE)) {
        stop(.no_backend_message(), call. = FALSE)
    }
    if (!is.na(py) && !reticulate::py_available(initialize = FALSE)) {
        Sys.setenv(RETICULATE_PYTHON = py)
        reticulate::use_python(py, required = TRUE)
    }
    cfg <- reticulate::py_config()
    if (!is.null(cfg$numpy) && !is.null(cfg$numpy$version) &&
        numeric_version(as.character(cfg$numpy$version)) >= "2.0.0" &&
        utils::packageVersion("reticulate") < "1.36") {
        stop("numpy ", cfg$numpy$version, " is too new for reticulate ",
             utils::packageVersion("reticulate"),
             "; install numpy < 2 in ", cfg$python, call. = FALSE)
    }
    .preload_torch()
    mod <- tryCatch(
        reticulate::import("sigel", convert = FALSE),
        error = function(e) {
            stop("The Python at ", cfg$python, " cannot import the sigel ",
                 "backend: ", conditionMessage(e), "\n", .no_backend_message(),
                 call. = FALSE)
        }
    )
    # Python now lives inside this R session: its R engine must call back
    # through reticulate, not rpy2 (see R/r-engine.R)
    reticulate::import("sigel._rbridge", convert = TRUE)$register_r_engine(
        .sigel_r_engine)
    .sigel_env$mod <- mod
    .sync_threads(mod)
}

# options(sigel.threads = n) -> sigel.settings.n_threads (NULL: the backend's
# automatic choice); applied on every call into the backend
.sync_threads <- function(mod) {
    n <- getOption("sigel.threads")
    if (!identical(n, .sigel_env$threads)) {
        reticulate::py_set_attr(mod$settings, "n_threads",
                                if (is.null(n)) NULL else as.integer(n))
        .sigel_env$threads <- n
    }
    mod
}

#' Report the Python backend in use
#'
#' @return A named list of plain R values (strings, numbers, logicals; no
#'   Python objects, so it survives [saveRDS()]): python path, backend,
#'   torch and numpy versions, the device `"auto"` resolves to, and whether
#'   CUDA is available.
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) sigelBackendInfo()
#' }
#' @export
sigelBackendInfo <- function() {
    mod <- .sigel_py()
    info <- reticulate::py_to_r(mod$`_backend_info`())
    # torch.__version__ is a str subclass that reticulate leaves in Python
    lapply(info, function(v) {
        if (inherits(v, "python.builtin.object")) .py_str(v) else v
    })
}

#' Install the sigel Python backend into a reticulate virtualenv
#'
#' Creates the virtualenv `envname` in reticulate's virtualenv root (with
#' `python -m venv`, so it works offline; see
#' [reticulate::virtualenv_root()]) and installs, with that environment's
#' pip, the pinned stack from
#' `requirements.txt` (torch, numpy < 2, ...) and then the backend itself.
#' Works offline when `path` points to a local source checkout and the
#' dependencies are in a local wheelhouse (`extra_pip_args =
#' c("--no-index", "--find-links=/wheels")`). [sigelPythonPath()] finds the
#' environment afterwards (after a restart of R, or when Python has not been
#' initialised yet in this session).
#'
#' @param envname `character(1)`: name of the virtualenv.
#' @param path `character(1)`: a sigel source folder (with `pyproject.toml`
#'   and `requirements.txt`) or a wheel file.
#' @param python `character(1)` or `NULL`: the base Python to create it from.
#' @param extra_pip_args `character`: extra arguments for `pip install`.
#' @param requirements `logical(1)`: install `requirements.txt` of `path`
#'   first (the pinned stack); `FALSE` installs the backend with its own
#'   (looser) dependencies only.
#' @return The path of the new environment's Python, invisibly.
#' @examples
#' \dontrun{
#' installSigel(path = "~/src/sigel")
#' }
#' @export
installSigel <- function(envname = "r-sigel", path = NULL, python = NULL,
                         extra_pip_args = character(),
                         requirements = TRUE) {
    if (is.null(path)) {
        stop("`path` must name a sigel source folder or wheel ",
             "(the backend is not on PyPI).", call. = FALSE)
    }
    if (!file.exists(path)) stop("`path` does not exist: ", path, call. = FALSE)
    path <- normalizePath(path)
    if (!reticulate::virtualenv_exists(envname)) {
        # `python -m venv` directly: works offline (reticulate's
        # virtualenv_create() upgrades pip from the network and installs
        # numpy 2, which reticulate 1.28 cannot read)
        base <- if (is.null(python)) Sys.which("python3") else python
        if (!nzchar(base)) {
            stop("no python3 found; pass `python =`", call. = FALSE)
        }
        dir <- file.path(reticulate::virtualenv_root(), envname)
        dir.create(dirname(dir), recursive = TRUE, showWarnings = FALSE)
        st <- system2(base, c("-m", "venv", shQuote(dir)),
                      env = "LD_LIBRARY_PATH=")
        if (!identical(as.integer(st), 0L)) {
            stop("could not create the virtualenv ", dir, call. = FALSE)
        }
    }
    py <- reticulate::virtualenv_python(envname)
    pip <- function(...) {
        args <- c("-m", "pip", "install", extra_pip_args, ...)
        # a subprocess must not inherit R's LD_LIBRARY_PATH (it may load the
        # system libpython instead of the virtualenv's; see STACK.md)
        st <- system2(py, shQuote(args), env = "LD_LIBRARY_PATH=")
        if (!identical(as.integer(st), 0L)) {
            stop("pip failed (exit status ", st, "): pip install ",
                 paste(c(extra_pip_args, ...), collapse = " "), call. = FALSE)
        }
    }
    req <- file.path(path, "requirements.txt")
    if (isTRUE(requirements) && dir.exists(path) && file.exists(req)) {
        pip("-r", req)
    } else if (isTRUE(requirements)) {
        pip("torch>=2.1", "numpy<2")
    }
    pip(path)
    invisible(py)
}
