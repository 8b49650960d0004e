# SPARK-X-style spatial expression test and Moran's I.
#
# Our own implementation of the published method (Zhu, Sun & Zhou 2021,
# Genome Biology 22:184), written from the paper's description: a
# covariance test between each gene's counts and a set of kernels of the
# spot coordinates, each with its asymptotic mixture-of-chi-squares null,
# combined across kernels by the Cauchy combination rule.

#' SPARK-X-style test for spatially variable genes
#'
#' For each gene `y` (raw counts, as in the paper) and each coordinate
#' kernel `X` (spots x 2), the statistic is
#' `T = n (y' Xc) (X'X)^-1 (Xc' y) / (y'y)` with `Xc` the column-centred `X`.
#' Under the null (expression independent of location) `T` is asymptotically
#' `lambda_y * sum_k lambda_k chi2_1`, with `lambda_y = 1 - n ybar^2 / y'y`
#' and `lambda_k` the eigenvalues of `Xc'Xc (X'X)^-1`. Eleven kernels: the
#' projection kernel of the scaled coordinates, and Gaussian
#' (`exp(-c^2 / (2 l^2))`) and cosine (`cos(2 pi c / l)`) transforms of each
#' scaled coordinate `c` for five length scales `l` (the 20, 40, ..., 100%
#' quantiles of `|c|`). Per-kernel p-values are combined by the Cauchy
#' combination rule (equal weights) and adjusted by Benjamini-Hochberg.
#'
#' @details The null distribution is computed exactly for two coordinates
#'   (a weighted sum of two chi-squares with 1 degree of freedom): its
#'   density is `exp(-t / (2a)) I0((a - b) t / (4ab)) / (2 sqrt(ab))` for
#'   weights `a >= b > 0`, and the tail probability is the integral of it,
#'   evaluated by 64-point Gauss-Laguerre quadrature on the exponentially
#'   scaled Bessel function (accurate in the far tail, as log-probabilities).
#'   One weight uses the chi-square with 1 df; more than two coordinates use
#'   the moment-matching approximation of Liu, Tang & Zhang (2009). The
#'   published software uses Davies' method with Liu's as a fallback; the
#'   kernels and the statistic follow the paper, the code is ours.
#' @param counts `matrix` or `dgCMatrix` (genes x spots) of raw counts, with
#'   gene rownames.
#' @param coords `matrix` (spots x 2) of coordinates.
#' @return A `data.frame` (rownames genes, ordered as `counts`): `stat` (the
#'   Cauchy combination statistic; its log where it would overflow),
#'   `log10_pval` (the combined p-value's log10, computed in the log domain:
#'   finite and without ties far below the smallest double, so rank genes by
#'   it), `pval` (may underflow to 0), `qval`, and per-kernel p-values
#'   `p_projection`, `p_gaussian1` ... `p_gaussian5`, `p_cosine1` ...
#'   `p_cosine5`.
#' @references Zhu J, Sun S, Zhou X (2021) SPARK-X: non-parametric modeling
#'   enables scalable and robust detection of spatial expression patterns for
#'   large spatial transcriptomic studies. Genome Biology 22:184.
#'   Liu Y, Xie J (2020) Cauchy combination test. JASA 115:393.
#' @seealso [sigelMoransI()], [sigelCompareSVG()]
#' @examples
#' xy <- as.matrix(expand.grid(x = 1:20, y = 1:20))
#' counts <- matrix(rpois(30 * 400, 5), 30, 400,
#'                  dimnames = list(paste0("g", 1:30), NULL))
#' counts[1, ] <- rpois(400, ifelse(xy[, 2] > 10, 15, 2))
#' head(sigelSparkX(counts, xy), 3)
#' @export
sigelSparkX <- function(counts, coords) {
    X <- .sim_counts(counts, NULL)
    coords <- .sim_coords(coords)
    if (nrow(coords) != ncol(X)) {
        stop("`coords` has ", nrow(coords), " rows but `counts` has ",
             ncol(X), " spots (columns)", call. = FALSE)
    }
    genes <- rownames(X)
    if (is.null(genes)) genes <- paste0("gene", seq_len(nrow(X)))
    kernels <- .sparkx_kernels(coords)
    n <- ncol(X)
    sumy2 <- Matrix::rowSums(X^2)
    ybar <- Matrix::rowMeans(X)
    lam_y <- 1 - n * ybar^2 / sumy2
    LP <- vapply(kernels, function(K) {
        .sparkx_kernel_logp(X, K, n, sumy2, lam_y)
    }, numeric(nrow(X)))
    LP <- matrix(LP, nrow(X))
    P <- exp(LP)
    colnames(P) <- paste0("p_", names(kernels))
    comb <- .cauchy_combine_log(LP)
    p <- exp(comb$logp)
    out <- data.frame(stat = comb$stat, log10_pval = comb$logp / log(10),
                      pval = p, qval = stats::p.adjust(p, "BH"),
                      P, row.names = genes, check.names = FALSE)
    out
}

.sparkx_kernels <- function(coords) {
    sc <- scale(coords)
    sc[!is.finite(sc)] <- 0
    out <- list(projection = sc)
    probs <- seq(0.2, 1, by = 0.2)
    L <- apply(abs(sc), 2L, stats::quantile, probs = probs, names = FALSE)
    for (k in seq_along(probs)) {
        l <- L[k, ]
        out[[paste0("gaussian", k)]] <- sweep(sc^2, 2L, 2 * l^2, "/")
        out[[paste0("gaussian", k)]] <- exp(-out[[paste0("gaussian", k)]])
    }
    for (k in seq_along(probs)) {
        l <- L[k, ]
        out[[paste0("cosine", k)]] <- cos(2 * pi * sweep(sc, 2L, l, "/"))
    }
    out
}

.sparkx_kernel_logp <- function(X, K, n, sumy2, lam_y) {
    Kc <- scale(K, scale = FALSE)
    XtX <- crossprod(K)
    Minv <- tryCatch(solve(XtX), error = function(e) NULL)
    if (is.null(Minv) || any(!is.finite(Minv))) {
        return(rep(NA_real_, nrow(X)))
    }
    lam_k <- Re(eigen(crossprod(Kc) %*% Minv, only.values = TRUE)$values)
    lam_k <- sort(lam_k[lam_k > 1e-10], decreasing = TRUE)
    E <- as.matrix(X %*% Kc)                          # genes x d
    stat <- n * rowSums((E %*% Minv) * E) / sumy2
    t <- stat / lam_y
    lp <- rep(0, nrow(X))
    ok <- is.finite(t) & lam_y > 1e-12 & sumy2 > 0
    if (length(lam_k) && any(ok)) lp[ok] <- .chisq_mix_logsf(t[ok], lam_k)
    lp
}

# log P(sum_k lam_k chi2_1 > t), vectorised over t
.chisq_mix_logsf <- function(t, lam) {
    t <- pmax(t, 0)
    if (length(lam) == 1L) {
        return(stats::pchisq(t / lam, df = 1, lower.tail = FALSE,
                             log.p = TRUE))
    }
    if (length(lam) == 2L) {
        a <- max(lam)
        b <- min(lam)
        if ((a - b) / a < 1e-10) {
            return(-t / (2 * a))                         # a * chi2_2
        }
        cc <- (a - b) / (4 * a * b)
        gl <- .gauss_laguerre(64L)
        arg <- outer(t, 2 * a * gl$nodes, "+") * cc
        s <- as.vector(.bessel_i0_scaled(arg) %*% gl$weights)
        out <- -t / (2 * a) + 0.5 * log(a / b) + log(s)
        return(pmin(out, 0))
    }
    # Liu, Tang & Zhang (2009) moment matching for more weights
    c1 <- sum(lam)
    c2 <- sum(lam^2)
    c3 <- sum(lam^3)
    c4 <- sum(lam^4)
    s1 <- c3 / c2^1.5
    s2 <- c4 / c2^2
    if (s1^2 > s2) {
        aa <- 1 / (s1 - sqrt(s1^2 - s2))
        delta <- s1 * aa^3 - aa^2
        l <- aa^2 - 2 * delta
    } else {
        delta <- 0
        l <- 1 / s2
        aa <- sqrt(l)
    }
    mu_x <- l + delta
    sd_x <- sqrt(2) * aa
    tt <- (t - c1) / sqrt(2 * c2)
    stats::pchisq(tt * sd_x + mu_x, df = l, ncp = delta, lower.tail = FALSE,
                  log.p = TRUE)
}

# exp(-z) I0(z): besselI() for small z, the asymptotic series (relative
# error < 1e-6) for z > 15, which is most quadrature points and much faster
.bessel_i0_scaled <- function(z) {
    out <- z
    big <- z > 15
    zb <- z[big]
    out[big] <- (1 + 1 / (8 * zb) + 9 / (128 * zb^2) + 225 / (3072 * zb^3) +
                     11025 / (98304 * zb^4)) / sqrt(2 * pi * zb)
    out[!big] <- besselI(z[!big], 0, expon.scaled = TRUE)
    out
}

.gauss_laguerre <- function(n) {
    if (!is.null(.sigel_env$gl) && length(.sigel_env$gl$nodes) == n) {
        return(.sigel_env$gl)
    }
    i <- seq_len(n)
    J <- diag(2 * i - 1)
    off <- seq_len(n - 1L)
    J[cbind(off, off + 1L)] <- off
    J[cbind(off + 1L, off)] <- off
    e <- eigen(J, symmetric = TRUE)
    gl <- list(nodes = e$values, weights = e$vectors[1L, ]^2)
    .sigel_env$gl <- gl
    gl
}

# Cauchy combination of per-kernel log p-values (rows = genes), equal
# weights, in the log domain: a p-value below 1e-15 contributes
# 1 / (p pi) = exp(-log p - log pi) to the statistic, and a statistic above
# 1e15 has log p = -log(stat pi); so the combined p-value keeps its order far
# below the smallest double (no ties at a floor). `stat` is the Cauchy
# statistic, `log(stat)` where it would overflow.
.cauchy_combine_log <- function(LP) {
    LP <- as.matrix(LP)
    LP[is.na(LP)] <- 0
    LP <- pmin(LP, log1p(-1e-16))
    small <- LP < log(1e-15)
    Tm <- ifelse(small, 0, tan((0.5 - exp(LP)) * pi))
    lt <- ifelse(small, -LP - log(pi), -Inf)
    big <- rowSums(small) > 0
    K <- ncol(LP)
    stat <- rowMeans(Tm)
    logp <- stats::pcauchy(stat, lower.tail = FALSE, log.p = TRUE)
    if (any(big)) {
        m <- apply(lt[big, , drop = FALSE], 1L, max)
        rest <- rowSums(Tm[big, , drop = FALSE])
        # log(sum of the large terms + the bounded rest) - log K
        lsum <- m + log(rowSums(exp(lt[big, , drop = FALSE] - m)) +
                            rest * exp(-m))
        lstat <- lsum - log(K)
        lp_big <- ifelse(lstat > log(1e15), -lstat - log(pi),
                         stats::pcauchy(exp(lstat), lower.tail = FALSE,
                                        log.p = TRUE))
        logp[big] <- lp_big
        stat[big] <- ifelse(is.finite(exp(lstat)), exp(lstat), lstat)
    }
    list(stat = stat, logp = pmin(logp, 0))
}

# Cauchy combination of the columns of P (rows = genes), equal weights
.cauchy_combine <- function(P) {
    r <- .cauchy_combine_log(log(pmax(as.matrix(P), 0)))
    list(stat = r$stat, p = exp(r$logp))
}

#' Moran's I of every gene
#'
#' Moran's I on the spots' k-nearest-neighbour graph (each spot linked to its
#' `k` nearest other spots, row-standardised so a spot's neighbours weigh
#' `1/k`), on library-size-normalised (to the median library size), `log1p`
#' values; z-scores from the variance under the randomisation assumption
#' (Cliff & Ord 1981; it includes each gene's kurtosis, which keeps sparse,
#' skewed counts calibrated), one-sided p-values for positive
#' autocorrelation, BH q-values. The same statistic as Python's
#' `sigel.tissue.morans_i()` / `sigel.tl.morans_i()`, which computes it
#' (through reticulate): one definition of the statistic in both languages.
#'
#' @param counts `matrix` or `dgCMatrix` (genes x spots).
#' @param coords `matrix` (spots x 2).
#' @param k `integer(1)`: neighbours per spot (6 suits Visium).
#' @param library_size `numeric` per-spot library sizes (default: column sums).
#' @return A `data.frame` (rownames genes): `I`, `z`, `pval`, `qval`.
#' @seealso [sigelSparkX()]
#' @examples
#' if (sigelPythonAvailable()) {
#'     xy <- as.matrix(expand.grid(x = 1:15, y = 1:15))
#'     counts <- matrix(rpois(10 * 225, 5), 10, 225,
#'                      dimnames = list(paste0("g", 1:10), NULL))
#'     counts[1, ] <- rpois(225, ifelse(xy[, 1] > 7, 12, 2))
#'     head(sigelMoransI(counts, xy), 3)
#' }
#' @export
sigelMoransI <- function(counts, coords, k = 6L, library_size = NULL) {
    X <- .sim_counts(counts, NULL)
    coords <- .sim_coords(coords)
    n <- ncol(X)
    if (nrow(coords) != n) {
        stop("`coords` has ", nrow(coords), " rows but `counts` has ", n,
             " spots (columns)", call. = FALSE)
    }
    if (n < 4L) stop("Moran's I needs at least 4 spots; got ", n, call. = FALSE)
    k <- .check_number(k, "k", min = 1, whole = TRUE)
    if (!is.null(library_size) && length(library_size) != n) {
        stop("`library_size` has ", length(library_size), " values for ", n,
             " spots", call. = FALSE)
    }
    genes <- rownames(X)
    if (is.null(genes)) rownames(X) <- as.character(seq_len(nrow(X)))
    # one statistic in both languages: Python's sigel.tissue.morans_i
    a <- .anndata_from_parts(X, list(obs = NULL, obsm = unname(coords)),
                             library_size)
    tab <- .py_call(.sigel_py()$tissue$morans_i(
        a, n_neighbors = as.integer(min(k, n - 1L)), counts = FALSE,
        dtype = "float64",
        library_size_key = if (is.null(library_size)) NULL else
            "sigel_library_size"), "sigelMoransI")
    df <- .py_df(tab)[rownames(X), c("I", "z", "pval", "qval")]
    rownames(df) <- genes
    df
}

