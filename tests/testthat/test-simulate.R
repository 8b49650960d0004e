# The R engine of the simulator and the SPARK-X-style test / Moran's I
# (pure R: no Python needed).

.grid <- function(n = 20) as.matrix(expand.grid(x = seq_len(n), y = seq_len(n)))

test_that("templates become region weights as documented", {
    xy <- cbind(0:5, 0)
    rw <- sigel:::.region_weights(xy, c("b", "a", "b", "c", "a", "a"), 0)
    expect_identical(rw$regions, c("a", "b", "c"))
    expect_identical(rw$hard, c(2L, 1L, 2L, 3L, 1L, 1L))
    rw <- sigel:::.region_weights(xy, factor(rep(c("x", "y"), 3),
                                             levels = c("y", "x")), 0)
    expect_identical(rw$regions, c("y", "x"))
    rw <- sigel:::.region_weights(xy, 0:5 >= 3, 0)
    expect_identical(rw$regions, c("background", "pattern"))
    w <- seq(0, 1, length.out = 6)
    rw <- sigel:::.region_weights(xy, w, 0)
    expect_equal(unname(rw$weights[, 2]), w)
    expect_identical(rw$hard, c(1L, 1L, 1L, 2L, 2L, 2L))
    expect_error(sigel:::.region_weights(xy, seq(0, 2.5, length.out = 6), 0),
                 "\\[0, 1\\]")
    # tapering keeps rows summing to 1 and only changes spots near the edge
    g <- .grid()
    rw0 <- sigel:::.region_weights(g, g[, 2] <= 10, 0)
    rw1 <- sigel:::.region_weights(g, g[, 2] <= 10, 2)
    expect_equal(rowSums(rw1$weights), rep(1, nrow(g)))
    far <- g[, 2] <= 2 | g[, 2] >= 19
    expect_equal(rw1$weights[far, ], rw0$weights[far, ], ignore_attr = TRUE)
    expect_true(any(rw1$weights[, 2] > 0.05 & rw1$weights[, 2] < 0.95))
})

test_that("simulatePattern calibrates region means and the trend", {
    set.seed(1)
    g <- .grid()
    n <- nrow(g)
    mu_g <- exp(runif(150, log(0.5), log(40)))
    counts <- matrix(rnbinom(150 * n, size = 3, mu = rep(mu_g, n)), 150, n)
    tpl <- ifelse(g[, 2] <= 10, "top", "bottom")
    q <- c(top = 0.9, bottom = 0.3)
    y <- simulatePattern(g, tpl, counts = counts, quantiles = q, n_draws = 200,
                         seed = 1, return_params = TRUE)
    p <- attr(y, "params")
    expect_equal(dim(y), c(n, 200L))
    expect_type(y, "integer")
    sf <- colSums(counts) / mean(colSums(counts))
    Y <- sweep(counts, 2, sf, "/")
    for (r in names(q)) {
        gm <- rowMeans(Y[, tpl == r])
        expect_equal(unname(p$region_means[r]),
                     unname(quantile(gm, q[[r]], type = 7)))
        expect_equal(mean(y[tpl == r, ]), mean(p$mu[tpl == r]),
                     tolerance = 0.03)
    }
    # NB(size = 3): CV^2 = 1/3 + 1/mu
    expect_equal(p$trend[1], 1 / 3, tolerance = 0.15)
    expect_equal(p$trend[2], 1, tolerance = 0.15)
    # explicit means, no counts: default trend, NB variance a0 mu^2 + a1 mu
    y2 <- simulatePattern(g, tpl, means = c(top = 20, bottom = 2),
                          n_draws = 200, seed = 2)
    hi <- y2[tpl == "top", ]
    expect_equal(mean(hi), 20, tolerance = 0.03)
    expect_equal(var(as.vector(hi)), 0.1 * 400 + 20, tolerance = 0.1)
    # same seed, same draws
    y3 <- simulatePattern(g, tpl, means = c(top = 20, bottom = 2),
                          n_draws = 200, seed = 2)
    expect_identical(y2, y3)
})

test_that("simulatePattern checks its input", {
    g <- .grid(5)
    expect_error(simulatePattern(g, g[, 1] > 2), "exactly one")
    expect_error(simulatePattern(g, g[, 1] > 2, quantiles = c(pattern = 0.5)),
                 "calibration")
    expect_error(simulatePattern(g, g[, 1] > 2, means = c(pattern = 5)),
                 "no target for regions background")
    expect_error(simulatePattern(g, rep(TRUE, 3), means = c(pattern = 1)),
                 "3 values")
    expect_error(simulatePattern(g, g[, 1] > 2, means = c(pattern = 1,
                                                          background = 1),
                                 taper = -1), "taper")
})

test_that("an image template is read at the spots", {
    g <- .grid(10)
    img <- matrix(FALSE, 10, 10)
    img[1:5, ] <- TRUE                      # rows = y: the top half
    y <- simulatePattern(g, img, means = c(pattern = 30, background = 0),
                         seed = 1)
    expect_true(all(y[g[, 2] > 6, 1] == 0))
    expect_gt(mean(y[g[, 2] <= 4, 1]), 10)
})

test_that("simulateHomogeneous keeps each gene's marginal", {
    set.seed(3)
    n <- 3000
    X <- rbind(rnbinom(n, size = 2, mu = 6) * (runif(n) > 0.3),
               rpois(n, 3))
    y <- simulateHomogeneous(X, n_draws = 5, seed = 1)
    p <- attr(y, "params")
    expect_equal(dim(y), c(n, 2L, 5L))
    expect_equal(p$pi[1], 0.3, tolerance = 0.15)
    expect_equal(p$mu[1], 6, tolerance = 0.1)
    expect_true(p$pi[2] < 0.02 && p$theta[2] > 20)
    expect_equal(mean(y[, 1, ]), mean(X[1, ]), tolerance = 0.05)
    expect_equal(mean(y[, 1, ] == 0), mean(X[1, ] == 0), tolerance = 0.05)
    lib <- rep(c(1000, 3000), length.out = n)
    yd <- simulateHomogeneous(X, n_draws = 5, library_size = lib, seed = 1)
    ratio <- mean(yd[lib == 3000, 2, ]) / mean(yd[lib == 1000, 2, ])
    expect_gt(ratio, 2.5)
    expect_lt(ratio, 3.5)
})

test_that("the chi-square mixture tail is exact", {
    lam <- c(0.9, 0.3)
    tt <- c(0.5, 2, 8, 30)
    ref <- vapply(tt, function(t) {
        stats::integrate(function(x) dchisq(x / lam[1], 1) / lam[1] *
                             pchisq((t - x) / lam[2], 1, lower.tail = FALSE),
                         0, t)$value + pchisq(t / lam[1], 1, lower.tail = FALSE)
    }, numeric(1))
    expect_equal(exp(sigel:::.chisq_mix_logsf(tt, lam)), ref, tolerance = 2e-3)
    # equal weights: a scaled chi-square with 2 df
    expect_equal(exp(sigel:::.chisq_mix_logsf(tt, c(0.5, 0.5))),
                 pchisq(tt / 0.5, 2, lower.tail = FALSE))
    # Cauchy combination of identical p-values returns that p-value
    expect_equal(sigel:::.cauchy_combine(matrix(c(0.01, 0.01, 0.3, 0.3), 2,
                                                byrow = TRUE))$p,
                 c(0.01, 0.3), tolerance = 1e-8)
})

test_that("sigelSparkX is calibrated on flat genes and finds patterns", {
    set.seed(4)
    g <- .grid(25)
    n <- nrow(g)
    G <- 1500
    mu <- exp(rnorm(G, 1, 1))
    counts <- matrix(rnbinom(G * n, size = 2, mu = rep(mu, n)), G, n,
                     dimnames = list(paste0("g", seq_len(G)), NULL))
    planted <- 1:30
    counts[planted, ] <- rpois(30 * n, rep(ifelse(g[, 2] > 12, 8, 2),
                                           each = 30))
    res <- sigelSparkX(counts, g)
    expect_identical(rownames(res), rownames(counts))
    expect_true(all(c("stat", "pval", "qval", "p_projection", "p_gaussian1",
                      "p_cosine5") %in% names(res)))
    frac <- mean(res$pval[-planted] < 0.05)
    expect_gte(frac, 0.03)
    expect_lte(frac, 0.07)
    expect_gt(mean(res$qval[planted] < 0.05), 0.95)
    expect_error(sigelSparkX(counts, g[-1, ]), "spots")
})

test_that("sigelMoransI matches the dense formula", {
    skip_if_no_sigel_python()
    set.seed(5)
    # a lattice, jittered so that every spot's k nearest neighbours are unique
    g <- .grid(12) + matrix(runif(288, -0.01, 0.01), ncol = 2)
    n <- nrow(g)
    counts <- matrix(rpois(10 * n, 5), 10, n,
                     dimnames = list(paste0("g", 1:10), NULL))
    counts[1, ] <- rpois(n, ifelse(g[, 1] > 6, 15, 2))
    counts[2, ] <- rbinom(n, 1, 0.05) * rpois(n, 3)       # sparse, skewed
    res <- sigelMoransI(counts, g, k = 4)
    D <- as.matrix(dist(g))
    diag(D) <- Inf
    W <- t(apply(D, 1, function(d) as.numeric(seq_along(d) %in% order(d)[1:4]))) / 4
    expect_equal(unname(rowSums(W)), rep(1, n))
    lib <- colSums(counts)
    Z <- log1p(sweep(counts, 2, median(lib) / lib, "*"))
    Z <- Z - rowMeans(Z)
    I <- n / sum(W) * rowSums((Z %*% W) * Z) / rowSums(Z^2)
    expect_equal(res$I, unname(I), tolerance = 1e-10)
    # randomisation variance (Cliff & Ord 1981), with each gene's kurtosis
    S0 <- sum(W); S1 <- 0.5 * sum((W + t(W))^2)
    S2 <- sum((rowSums(W) + colSums(W))^2)
    b2 <- n * rowSums(Z^4) / rowSums(Z^2)^2
    EI <- -1 / (n - 1)
    VI <- (n * ((n^2 - 3 * n + 3) * S1 - n * S2 + 3 * S0^2) -
           b2 * ((n^2 - n) * S1 - 2 * n * S2 + 6 * S0^2)) /
        ((n - 1) * (n - 2) * (n - 3) * S0^2) - EI^2
    expect_equal(res$z, unname((I - EI) / sqrt(VI)), tolerance = 1e-8)
    expect_gt(res["g1", "I"], 0.5)
    expect_lt(res["g1", "pval"], 1e-10)
})

test_that("sigelMoransI and Python's sigel.tissue.morans_i give the same statistic", {
    skip_if_no_sigel_python()
    set.seed(6)
    n <- 150
    xy <- cbind(runif(n, 0, 10), runif(n, 0, 10))   # no distance ties
    counts <- matrix(rpois(8 * n, 3), 8, n,
                     dimnames = list(paste0("g", 1:8), paste0("s", 1:n)))
    counts[1, ] <- rpois(n, ifelse(xy[, 1] > 5, 10, 1))
    r <- sigelMoransI(counts, xy, k = 6)
    a <- sigel:::.anndata_from_parts(counts, list(obs = NULL, obsm = xy))
    py <- reticulate::py_to_r(sigel:::.sigel_py()$tissue$morans_i(a, n_neighbors = 6L))
    expect_equal(r$I, py$I, tolerance = 1e-6)   # Python reads float32 counts
    expect_equal(r$z, py$z, tolerance = 1e-5)
    expect_equal(r$pval, py$pval, tolerance = 1e-5)
})
