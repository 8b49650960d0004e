# Pseudo-gene simulator (the "r" engine of sigel.sim in Python).
#
# One recipe, two engines: this file and python/sigel/sim/ (patterned.py,
# nulls.py) implement the same steps (see the details of ?simulatePattern), so the two engines agree
# in distribution; only their random streams differ.

#' Simulate pseudo-genes with a designated spatial pattern
#'
#' Turns a template (region labels per spot, a 0/1 mask, a continuous
#' pattern in \[0, 1\], or a mask/label image) and per-region targets into
#' negative binomial counts calibrated on observed genes. This is the R
#' engine of `sigel.sim.pseudo_gene(..., engine = "r")` in Python; both
#' engines follow the same recipe and agree in distribution.
#'
#' @details The recipe:
#' 1. **Template to region weights** `W` (spots x regions, rows sum to 1):
#'    labels (character, factor, integer) give one region per label (factor
#'    levels, else the sorted labels); logicals or numbers that are all 0/1
#'    give regions `"background"` (FALSE) and `"pattern"` (TRUE); other
#'    numbers in \[0, 1\] are a continuous pattern `w` with weights
#'    `(1 - w, w)`. A matrix is an image read at the spots: coordinates scaled
#'    to \[0, 1\] per axis, x to columns and y to rows, nearest pixel.
#' 2. **Size factors** `sf` (mean 1): library sizes (`library_size`, else the
#'    column sums of `counts`) over their mean; 1 without either. Spots with
#'    `sf = 0` are left out of the calibration (steps 3 and 6) and get mean 0.
#' 3. **Region means** `m_r`: `means`, or with `quantiles` the `q_r`
#'    quantile (type 7) over the observed genes (any count) of their mean
#'    size-factor-normalised count in region `r`; a spot belongs to its
#'    largest-weight region (`w >= 0.5` is `"pattern"`).
#' 4. **Tapered edges** (`taper > 0`): `W <- K W / rowSums(K)`, Gaussian
#'    kernel of SD `s = taper x` the median nearest-neighbour distance,
#'    truncated at `3 s` (`taper` is in spot spacings).
#' 5. **Mean per spot**: `mu_s = sf_s * sum_r W_sr m_r`.
#' 6. **Mean-dispersion trend** `CV^2 = a0 + a1 / mu` fitted to the observed
#'    genes' mean and variance of normalised counts (genes with both > 0) as
#'    a gamma GLM with identity link (25 IRLS iterations, weights
#'    `1 / fit^2`), `a0, a1` clipped at 0; default `c(0.1, 1)` without counts.
#' 7. **Counts**: negative binomial with mean `mu_s` and variance
#'    `a0 mu^2 + a1 mu` (size `1 / (a0 + (a1 - 1) / mu)`), Poisson where
#'    `a0 + (a1 - 1) / mu <= 1e-8`.
#'
#' @param coords `matrix` (spots x 2) of spot coordinates.
#' @param template `vector` (one value per spot: character/factor labels,
#'   logical mask, or numeric pattern in \[0, 1\]) or a `matrix` image.
#' @param counts `matrix` or `dgCMatrix` (genes x spots) of observed counts
#'   to calibrate against, or `NULL`.
#' @param quantiles named `numeric`: per-region quantile of the observed
#'   genes' regional means (needs `counts`).
#' @param means named `numeric`: explicit per-region mean counts (at size
#'   factor 1). Exactly one of `quantiles` and `means`.
#' @param taper `numeric(1)`: width of tapered edges in spot spacings.
#' @param n_draws `integer(1)`: number of pseudo-genes.
#' @param library_size `numeric` per-spot library sizes, or `NULL`.
#' @param trend `numeric(2)` `c(a0, a1)`, or `NULL` to fit it.
#' @param seed `integer(1)` or `NULL` (leave the RNG as it is).
#' @param return_params `logical(1)`: attach the fitted quantities.
#' @return An integer `matrix` (spots x `n_draws`). With `return_params`, the
#'   attribute `"params"` is a list with `regions`, `region_means`, `trend`,
#'   `size_factors`, `mu` and `weights`.
#' @seealso [simulateHomogeneous()]; in Python `sigel.sim.pseudo_gene()`
#'   and `sigel.tl.pattern_search()`.
#' @references Li et al. (2025) Genome Biology 26:287 (designated-pattern
#'   search). Brennecke et al. (2013) Nature Methods 10:1093 (the trend).
#' @examples
#' xy <- as.matrix(expand.grid(x = 1:20, y = 1:20))
#' counts <- matrix(rpois(50 * 400, 5), 50, 400)
#' y <- simulatePattern(xy, xy[, 2] <= 10, counts = counts,
#'                      quantiles = c(pattern = 0.9, background = 0.2),
#'                      taper = 1, n_draws = 3, seed = 1)
#' dim(y)
#' @export
simulatePattern <- function(coords, template, counts = NULL, quantiles = NULL,
                            means = NULL, taper = 0, n_draws = 1L,
                            library_size = NULL, trend = NULL, seed = NULL,
                            return_params = FALSE) {
    coords <- .sim_coords(coords)
    n <- nrow(coords)
    taper <- .check_number(taper, "taper", min = 0)
    n_draws <- .check_number(n_draws, "n_draws", min = 1, whole = TRUE)
    seed <- .check_seed(seed, null_ok = TRUE)
    if (is.null(quantiles) == is.null(means)) {
        .sigel_stop("give exactly one of `quantiles` (named per region) or ",
                    "`means`; got quantiles = ", .fmt_value(quantiles),
                    ", means = ", .fmt_value(means))
    }
    X <- .sim_counts(counts, n)
    if (!is.null(quantiles)) {
        .check_targets(quantiles, "quantiles", max = 1)
        if (is.null(X)) {
            .sigel_stop("`quantiles` need calibration `counts` (got ",
                        "counts = NULL); or give `means`")
        }
    } else {
        .check_targets(means, "means")
    }
    if (!is.null(trend)) {
        trend <- as.numeric(trend)
        if (length(trend) != 2L || any(!is.finite(trend) | trend < 0)) {
            stop("`trend` must be c(a0, a1) with both >= 0", call. = FALSE)
        }
    }
    if (!is.null(seed)) set.seed(seed)
    rw <- .region_weights(coords, template, taper)
    target <- if (is.null(quantiles)) means else quantiles
    if (any(!rw$regions %in% names(target))) {
        .sigel_stop("no target for regions ",
                    paste(setdiff(rw$regions, names(target)),
                          collapse = ", "), " in `",
                    if (is.null(quantiles)) "means" else "quantiles",
                    "`: got ", .fmt_value(target),
                    "; the template's regions are ",
                    paste(rw$regions, collapse = ", "))
    }
    sf <- .size_factors(X, library_size, n)
    m <- if (is.null(quantiles)) {
        stats::setNames(as.numeric(means[rw$regions]), rw$regions)
    } else {
        .region_means(X, rw$hard, rw$regions, quantiles, sf)
    }
    mu <- sf * as.vector(rw$weights %*% m[rw$regions])
    if (is.null(trend)) {
        trend <- if (is.null(X)) c(0.1, 1) else .fit_trend(X, sf)
    }
    y <- .nb_draw(rep(mu, n_draws), trend[1], trend[2])
    y <- matrix(as.integer(y), n, as.integer(n_draws))
    if (isTRUE(return_params)) {
        attr(y, "params") <- list(regions = rw$regions, region_means = m,
                                  trend = trend, size_factors = sf, mu = mu,
                                  weights = rw$weights)
    }
    y
}

#' Spatially homogeneous controls from each gene's own marginal
#'
#' Fits a zero-inflated negative binomial to every gene by the method of
#' moments (vectorised) and draws counts independently at every spot: the
#' gene's marginal shuffled over the tissue. The R engine of
#' `sigel.sim.homogeneous(..., engine = "r")`; the null of the SVG test.
#'
#' @details With `library_size`, moments are taken on `y / sf` and controls
#'   are drawn as `ZINB(pi, sf_s mu, theta)` (depth-aware); otherwise `sf = 1`
#'   (a pure shuffle of the raw marginal). With `m`, `v` the mean and variance
#'   of `y / sf`, `p0` the observed zero fraction and `c = mean(1 / sf)`: for
#'   a zero-inflation `pi`, `mu = m / (1 - pi)` and
#'   `1 / theta = (v / (1 - pi) - c mu) / mu^2 - pi` (clipped at 0, Poisson);
#'   `pi` solves `pi + (1 - pi) NB0 = p0` by bisection (0 when the negative
#'   binomial alone has enough zeros).
#' @param counts `matrix` or `dgCMatrix` (genes x spots).
#' @param n_draws `integer(1)`: controls per gene.
#' @param library_size `numeric` per-spot library sizes, or `NULL`.
#' @param seed `integer(1)` or `NULL`.
#' @return An integer `array` (spots x genes x `n_draws`); the attribute
#'   `"params"` holds the fitted `data.frame` (`mu`, `theta`, `pi`,
#'   `zero_frac`).
#' @seealso [simulatePattern()]
#' @examples
#' counts <- matrix(rnbinom(20 * 300, size = 2, mu = 4), 20, 300)
#' y <- simulateHomogeneous(counts, n_draws = 2, seed = 1)
#' dim(y)
#' @export
simulateHomogeneous <- function(counts, n_draws = 1L, library_size = NULL,
                                seed = NULL) {
    X <- .sim_counts(counts, NULL)
    n_draws <- .check_number(n_draws, "n_draws", min = 1, whole = TRUE)
    seed <- .check_seed(seed, null_ok = TRUE)
    n <- ncol(X)
    if (!is.null(seed)) set.seed(seed)
    sf <- if (is.null(library_size)) rep(1, n) else
        .size_factors(NULL, library_size, n)
    p <- .fit_zinb(X, sf)
    G <- nrow(X)
    nd <- as.integer(n_draws)
    # spots x (genes * draws), gene-major columns as in Python
    mu <- rep(p$mu, each = nd)
    th <- rep(p$theta, each = nd)
    pz <- rep(p$pi, each = nd)
    M <- outer(sf, mu)
    TH <- matrix(rep(th, each = n), n)
    y <- matrix(0L, n, G * nd)
    pois <- !is.finite(TH)
    y[pois] <- stats::rpois(sum(pois), M[pois])
    nb <- !pois & M > 0
    y[nb] <- stats::rnbinom(sum(nb), size = TH[nb], mu = M[nb])
    keep <- matrix(stats::runif(n * G * nd), n) >= rep(pz, each = n)
    y <- y * keep
    out <- array(as.integer(y), c(n, nd, G))
    out <- aperm(out, c(1L, 3L, 2L))
    dimnames(out) <- list(colnames(X), rownames(X), NULL)
    attr(out, "params") <- p
    out
}

# ------------------------------------------------------------------ internals

# per-region targets: a named numeric vector, values in [0, max]
.check_targets <- function(v, name, max = Inf) {
    if (!is.numeric(v) || !length(v) || is.null(names(v)) ||
        any(!nzchar(names(v))) || anyDuplicated(names(v))) {
        .sigel_stop("`", name, "` must be a numeric vector named by region ",
                    "(e.g. c(pattern = 0.9, background = 0.5)); got ",
                    .fmt_value(v))
    }
    if (any(!is.finite(v) | v < 0 | v > max)) {
        .sigel_stop("`", name, "` must lie in [0, ", format(max), "]; got ",
                    .fmt_value(v))
    }
    invisible(v)
}

.sim_coords <- function(coords) {
    coords <- as.matrix(coords)
    if (!is.numeric(coords) || ncol(coords) < 2L || nrow(coords) < 2L) {
        stop("`coords` must be a numeric matrix with 2 columns (spots x 2)",
             call. = FALSE)
    }
    coords <- coords[, 1:2, drop = FALSE]
    storage.mode(coords) <- "double"
    if (any(!is.finite(coords))) {
        stop("`coords` contain NA or infinite values", call. = FALSE)
    }
    coords
}

.sim_counts <- function(counts, n) {
    if (is.null(counts)) return(NULL)
    if (methods::is(counts, "Matrix") && !methods::is(counts, "dgCMatrix")) {
        counts <- methods::as(methods::as(methods::as(counts, "dMatrix"),
                                          "generalMatrix"), "CsparseMatrix")
    }
    if (!methods::is(counts, "dgCMatrix")) {
        counts <- as.matrix(counts)
        if (!is.numeric(counts)) stop("`counts` must be numeric", call. = FALSE)
        nz <- which(counts != 0, arr.ind = TRUE)
        counts <- Matrix::sparseMatrix(i = nz[, 1], j = nz[, 2],
                                       x = as.numeric(counts[nz]),
                                       dims = dim(counts),
                                       dimnames = dimnames(counts))
    }
    if (!is.null(n) && ncol(counts) != n) {
        stop("`counts` have ", ncol(counts), " columns but there are ", n,
             " spots; pass counts as genes x spots", call. = FALSE)
    }
    if (length(counts@x) && (any(!is.finite(counts@x)) || min(counts@x) < 0)) {
        stop("`counts` must be finite and >= 0", call. = FALSE)
    }
    counts
}

.size_factors <- function(X, library_size, n) {
    if (!is.null(library_size)) {
        lib <- as.numeric(library_size)
        if (length(lib) != n) {
            stop("`library_size` has ", length(lib), " values for ", n,
                 " spots", call. = FALSE)
        }
    } else if (!is.null(X)) {
        lib <- Matrix::colSums(X)
    } else {
        return(rep(1, n))
    }
    if (any(!is.finite(lib) | lib < 0)) {
        stop("library sizes must be finite and >= 0", call. = FALSE)
    }
    if (mean(lib) <= 0) stop("library sizes are all zero", call. = FALSE)
    lib / mean(lib)
}

.scaled01 <- function(coords) {
    apply(coords, 2L, function(v) {
        r <- max(v) - min(v)
        (v - min(v)) / (if (r == 0) 1 else r)
    })
}

.sample_image <- function(coords, image) {
    uv <- .scaled01(coords)
    H <- nrow(image)
    W <- ncol(image)
    col <- round(uv[, 1] * (W - 1)) + 1
    row <- round(uv[, 2] * (H - 1)) + 1
    image[cbind(row, col)]
}

.region_weights <- function(coords, template, taper) {
    n <- nrow(coords)
    if (is.matrix(template) || is.array(template)) {
        if (length(dim(template)) == 2L &&
            !(ncol(template) == 1L && nrow(template) == n)) {
            template <- .sample_image(coords, template)
        } else {
            template <- as.vector(template)
        }
    }
    if (length(template) != n) {
        stop("`template` has ", length(template), " values but there are ",
             n, " spots", call. = FALSE)
    }
    if (anyNA(template)) stop("`template` contains NA", call. = FALSE)
    if (is.factor(template)) {
        regions <- levels(template)
        hard <- as.integer(template)
        W <- .one_hot(hard, length(regions))
    } else if (is.logical(template) ||
               (is.numeric(template) && all(template %in% c(0, 1)))) {
        w <- as.numeric(template)
        regions <- c("background", "pattern")
        W <- cbind(1 - w, w)
        hard <- as.integer(w >= 0.5) + 1L
    } else if (is.double(template) && any(template != round(template))) {
        if (any(!is.finite(template)) || min(template) < 0 ||
            max(template) > 1) {
            stop("a numeric (non-integer) template must be a pattern in ",
                 "[0, 1]; pass labels as character or integer", call. = FALSE)
        }
        w <- template
        regions <- c("background", "pattern")
        W <- cbind(1 - w, w)
        hard <- as.integer(w >= 0.5) + 1L
    } else {
        lab <- as.character(template)
        regions <- sort(unique(lab), method = "radix")
        hard <- match(lab, regions)
        W <- .one_hot(hard, length(regions))
    }
    colnames(W) <- regions
    if (taper > 0) W <- .taper(coords, W, taper)
    list(weights = W, regions = regions, hard = hard)
}

.one_hot <- function(idx, k) {
    W <- matrix(0, length(idx), k)
    W[cbind(seq_along(idx), idx)] <- 1
    W
}

# squared distances between rows of a (chunk) and all rows of b
.sqdist <- function(a, b) {
    pmax(outer(rowSums(a^2), rowSums(b^2), "+") - 2 * tcrossprod(a, b), 0)
}

.median_nn <- function(coords, chunk = 1024L) {
    n <- nrow(coords)
    d <- numeric(n)
    for (s in seq(1L, n, by = chunk)) {
        i <- s:min(n, s + chunk - 1L)
        D <- .sqdist(coords[i, , drop = FALSE], coords)
        D[cbind(seq_along(i), i)] <- Inf
        D[D == 0] <- Inf
        d[i] <- sqrt(apply(D, 1L, min))
    }
    d <- d[is.finite(d)]
    if (length(d)) stats::median(d) else 1
}

.taper <- function(coords, W, taper, chunk = 1024L) {
    s <- taper * .median_nn(coords)
    n <- nrow(coords)
    out <- matrix(0, n, ncol(W), dimnames = list(NULL, colnames(W)))
    for (st in seq(1L, n, by = chunk)) {
        i <- st:min(n, st + chunk - 1L)
        D2 <- .sqdist(coords[i, , drop = FALSE], coords)
        K <- exp(-D2 / (2 * s * s))
        K[D2 > (3 * s * (1 + 1e-7))^2] <- 0
        out[i, ] <- (K %*% W) / rowSums(K)
    }
    out
}

.region_means <- function(X, hard, regions, quantiles, sf) {
    ok <- sf > 0
    X <- X[, ok, drop = FALSE]
    hard <- hard[ok]
    Y <- X %*% Matrix::Diagonal(x = 1 / sf[ok])
    keep <- Matrix::rowSums(X) > 0
    if (!any(keep)) stop("the calibration counts are all zero", call. = FALSE)
    out <- vapply(seq_along(regions), function(r) {
        sel <- hard == r
        if (!any(sel)) {
            stop("region '", regions[r], "' holds no spot (a spot belongs to ",
                 "its largest-weight region); give explicit `means`",
                 call. = FALSE)
        }
        gm <- Matrix::rowMeans(Y[keep, sel, drop = FALSE])
        as.numeric(stats::quantile(gm, quantiles[[regions[r]]], type = 7,
                                   names = FALSE))
    }, numeric(1))
    stats::setNames(out, regions)
}

.fit_trend <- function(X, sf, n_iter = 25L) {
    ok <- sf > 0
    Y <- X[, ok, drop = FALSE] %*% Matrix::Diagonal(x = 1 / sf[ok])
    n <- ncol(Y)
    mu <- Matrix::rowMeans(Y)
    v <- (Matrix::rowMeans(Y^2) - mu^2) * n / max(n - 1, 1)
    ok <- mu > 0 & v > 0
    if (sum(ok) < 3) {
        stop("need at least 3 expressed, variable genes to fit the ",
             "mean-dispersion trend", call. = FALSE)
    }
    cv2 <- v[ok] / mu[ok]^2
    A <- cbind(1, 1 / mu[ok])
    w <- rep(1, length(cv2))
    coef <- c(0, 0)
    for (it in seq_len(n_iter)) {
        Aw <- A * w
        coef <- solve(crossprod(A, Aw), crossprod(Aw, cv2))
        fit <- pmax(as.vector(A %*% coef), 1e-8)
        w <- 1 / fit^2
    }
    pmax(as.numeric(coef), 0)
}

.nb_draw <- function(mu, a0, a1) {
    inv <- a0 + (a1 - 1) / mu
    pois <- !(inv > 1e-8) | mu <= 0
    out <- numeric(length(mu))
    out[pois] <- stats::rpois(sum(pois), mu[pois])
    nb <- !pois
    out[nb] <- stats::rnbinom(sum(nb), size = 1 / inv[nb], mu = mu[nb])
    out
}

.zinb_params <- function(pz, m, v, cc) {
    mu <- m / (1 - pz)
    it <- (v / (1 - pz) - cc * mu) / mu^2 - pz
    it[!is.finite(it)] <- 0
    list(mu = mu, inv_theta = pmax(it, 0))
}

.zinb_zero <- function(pz, m, v, cc) {
    p <- .zinb_params(pz, m, v, cc)
    od <- p$inv_theta > 1e-8
    safe <- ifelse(od, p$inv_theta, 1)
    nb0 <- ifelse(od, exp(-log1p(p$mu * safe) / safe), exp(-p$mu))
    pz + (1 - pz) * nb0
}

.fit_zinb <- function(X, sf, n_iter = 60L) {
    ok <- sf > 0
    X <- X[, ok, drop = FALSE]
    sf <- sf[ok]
    n <- ncol(X)
    Y <- X %*% Matrix::Diagonal(x = 1 / sf)
    m <- Matrix::rowMeans(Y)
    v <- pmax((Matrix::rowMeans(Y^2) - m^2) * n / max(n - 1, 1), 0)
    p0 <- 1 - Matrix::rowSums(X > 0) / n
    cc <- mean(1 / sf)
    pz <- numeric(length(m))
    need <- m > 0 & .zinb_zero(pz, m, v, cc) < p0
    if (any(need)) {
        lo <- numeric(sum(need))
        hi <- pmin(pmax(p0[need], 0), 1 - 1e-9)
        for (it in seq_len(n_iter)) {
            mid <- (lo + hi) / 2
            below <- .zinb_zero(mid, m[need], v[need], cc) < p0[need]
            lo <- ifelse(below, mid, lo)
            hi <- ifelse(below, hi, mid)
        }
        pz[need] <- (lo + hi) / 2
    }
    p <- .zinb_params(pz, m, v, cc)
    mu <- ifelse(m > 0, p$mu, 0)
    theta <- ifelse(p$inv_theta > 1e-8, 1 / p$inv_theta, Inf)
    data.frame(mu = mu, theta = theta, pi = pz, zero_frac = p0,
               row.names = rownames(X))
}
