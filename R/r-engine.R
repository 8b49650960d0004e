# The R engine of the Python backend when Python runs *inside* this R session
# (R -> reticulate -> Python). There rpy2 must not attach to R (it releases
# the GIL around R calls and crashes when R's event loop re-enters Python), so
# `.sigel_py()` registers `.sigel_r_engine` with the backend and the Python
# side (sigel/_rbridge.py) calls it through reticulate with plain arguments:
# numpy arrays, numbers, strings, named lists. One function, three tasks.

# Plain (reticulate-converted) arguments -> R objects.
.engine_dgc <- function(m) {
    if (is.null(m)) return(NULL)
    Matrix::sparseMatrix(i = as.integer(m$indices), p = as.integer(m$indptr),
                         x = as.numeric(m$data), dims = as.integer(m$dims),
                         index1 = FALSE)
}

.engine_template <- function(t) {
    if (is.list(t) && !is.null(t$levels)) {
        lev <- as.character(unlist(t$levels))
        return(factor(lev[as.integer(t$codes) + 1L], levels = lev))
    }
    if (is.array(t) && length(dim(t)) == 1L) as.vector(t) else t
}

.engine_named <- function(x) if (is.null(x)) NULL else unlist(x)

.engine_vector <- function(x) if (is.null(x)) NULL else as.numeric(x)

# Run one R-engine task for the Python backend; returns plain objects.
.sigel_r_engine <- function(what, args) {
    if (inherits(what, "python.builtin.object")) what <- reticulate::py_to_r(what)
    if (inherits(args, "python.builtin.object")) args <- reticulate::py_to_r(args)
    switch(what,
        simulate_pattern = {
            res <- simulatePattern(
                matrix(as.numeric(args$coords), ncol = 2L),
                .engine_template(args$template),
                counts = .engine_dgc(args$counts),
                quantiles = .engine_named(args$quantiles),
                means = .engine_named(args$means), taper = args$taper,
                n_draws = as.integer(args$n_draws),
                library_size = .engine_vector(args$library_size),
                trend = .engine_vector(args$trend),
                seed = if (is.null(args$seed)) NULL else as.integer(args$seed),
                return_params = isTRUE(args$return_params))
            p <- attr(res, "params")
            attr(res, "params") <- NULL
            list(y = res, params = p)
        },
        simulate_homogeneous = {
            res <- simulateHomogeneous(
                .engine_dgc(args$counts), n_draws = as.integer(args$n_draws),
                library_size = .engine_vector(args$library_size),
                seed = if (is.null(args$seed)) NULL else as.integer(args$seed))
            list(y = res, dims = dim(res))
        },
        sparkx = {
            M <- .engine_dgc(args$counts)
            if (!is.null(args$genes)) rownames(M) <- as.character(unlist(args$genes))
            res <- sigelSparkX(M, matrix(as.numeric(args$coords), ncol = 2L))
            list(genes = rownames(res), columns = as.list(res))
        },
        stop("unknown R-engine task: ", what, call. = FALSE))
}
