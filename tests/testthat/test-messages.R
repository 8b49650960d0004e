# Bad input gets an R error (class "sigel_input_error") that names the
# argument and shows what was given; raised in R, before Python is called.

msg_xy <- function(S = 6) data.frame(x = seq_len(S), y = seq_len(S))
msg_counts <- function(G = 5, S = 6) {
    matrix(rpois(G * S, 3), G, S,
           dimnames = list(paste0("g", seq_len(G)), paste0("s", seq_len(S))))
}

test_that("a character count matrix: named error, not an arithmetic one", {
    m <- msg_counts()
    storage.mode(m) <- "character"
    err <- tryCatch(runSIGEL(m, coords = msg_xy()), error = identity)
    expect_s3_class(err, "sigel_input_error")
    expect_match(conditionMessage(err), "`x` must be a numeric count matrix")
    expect_match(conditionMessage(err), "character matrix")
    df <- as.data.frame(msg_counts())
    df$s1 <- letters[1:5]
    expect_error(sigel:::.as_dgc(df, "counts"),
                 "`counts` must be a numeric count matrix.*data.frame with .*character")
})

test_that("image_options and hyper-parameters name the argument and value", {
    m <- msg_counts()
    expect_error(runSIGEL(m, coords = msg_xy(),
                          image_options = list(resolution = "big")),
                 "`image_options\\$resolution` must be a whole number >= 1; got \"big\"")
    expect_error(runSIGEL(m, coords = msg_xy(),
                          image_options = list(min_spots = 2.5)),
                 "`image_options\\$min_spots`.*got 2.5")
    expect_error(runSIGEL(m, coords = msg_xy(), image_options = list(1)),
                 "`image_options` must be a named list; got <list of length 1>")
    expect_error(runSIGEL(m, coords = msg_xy(), n_contexts = 1),
                 "`n_contexts` must be at least 2.*got 1")
    expect_error(runSIGEL(m, coords = msg_xy(), epochs = 3,
                          pretrain_epochs = 5),
                 "`pretrain_epochs` \\(5\\) must not exceed `epochs` \\(3\\)")
    expect_error(runSIGEL(m, coords = msg_xy(), seed = -1),
                 "`seed` must be a whole number >= 0 or NULL; got -1")
    expect_error(runSIGEL(m, coords = msg_xy(), seed = "a"),
                 "`seed`.*got \"a\"")
    expect_error(runSIGEL(m, coords = msg_xy(), n_threads = 0),
                 "`n_threads` must be a whole number >= 1 or NULL; got 0")
    err <- tryCatch(runSIGEL(m, coords = msg_xy(), n_contexts = 1),
                    error = identity)
    expect_s3_class(err, "sigel_input_error")
})

test_that("simulatePattern shows the quantiles it was given", {
    g <- as.matrix(expand.grid(x = 1:5, y = 1:5))
    counts <- matrix(rpois(10 * 25, 4), 10, 25)
    expect_error(simulatePattern(g, g[, 1] > 2, counts = counts,
                                 quantiles = c(0.9, 0.5)),
                 "`quantiles` must be a numeric vector named by region.*got c\\(0.9, 0.5\\)")
    expect_error(simulatePattern(g, g[, 1] > 2, counts = counts,
                                 quantiles = c(pattern = TRUE, background = FALSE)),
                 "`quantiles` must be a numeric vector.*got c\\(pattern = TRUE, background = FALSE\\)")
    expect_error(simulatePattern(g, g[, 1] > 2, counts = counts,
                                 quantiles = c(pattern = 2, background = 0.5)),
                 "`quantiles` must lie in \\[0, 1\\]; got c\\(pattern = 2, background = 0.5\\)")
    expect_error(simulatePattern(g, g[, 1] > 2, means = c(pattern = 1,
                                                          background = 1),
                                 n_draws = 0), "`n_draws`.*got 0")
})

test_that("the value formatter shows what was given", {
    f <- sigel:::.fmt_value
    expect_identical(f(NULL), "NULL")
    expect_identical(f("big"), "\"big\"")
    expect_identical(f(c(a = 1, b = 2)), "c(a = 1, b = 2)")
    expect_identical(f(1:7), "c(1, 2, 3, 4, 5, ...)")
    expect_identical(f(NA), "NA")
    expect_identical(f(matrix(0, 2, 3)), "<matrix 2 x 3>")
    expect_identical(f(character()), "character(0)")
    expect_identical(sigel:::.check_number(3, "k", min = 1, whole = TRUE), 3L)
    expect_identical(sigel:::.check_number(NULL, "k", null_ok = TRUE), NULL)
    expect_error(sigel:::.check_number(1:2, "k"), "`k` must be one number; got c\\(1, 2\\)")
})

test_that("sigelBackendInfo() holds plain R values that survive saveRDS", {
    skip_if_no_sigel_python()
    info <- sigelBackendInfo()
    expect_type(info$torch, "character")
    expect_false(any(vapply(info, inherits, logical(1),
                            "python.builtin.object")))
    f <- tempfile(fileext = ".rds")
    saveRDS(info, f)
    expect_identical(readRDS(f), info)
})

test_that("sigelSparkX ranks far beyond the double floor (log10 p)", {
    set.seed(3)
    g <- as.matrix(expand.grid(x = 1:60, y = 1:60))
    n <- nrow(g)
    strong <- t(vapply(c(40, 60, 80), function(hi) {
        as.numeric(rpois(n, ifelse(g[, 2] > 30, hi, 1)))
    }, numeric(n)))
    counts <- rbind(strong, matrix(rpois(5 * n, 5), 5, n))
    rownames(counts) <- paste0("g", seq_len(nrow(counts)))
    res <- sigelSparkX(counts, g)
    expect_true(all(is.finite(res$log10_pval)))
    # the strong genes lie below 1e-300 yet stay distinct and ordered
    expect_true(all(res$log10_pval[1:3] < -300))
    expect_equal(anyDuplicated(res$log10_pval[1:3]), 0L)
    expect_identical(order(res$log10_pval)[1:3], 3:1)
    expect_true(all(res$pval[1:3] == 0))          # underflows as a double
    expect_equal(res$pval[-(1:3)], 10^res$log10_pval[-(1:3)],
                 tolerance = 1e-8)
})

test_that("the imputation reference comes as `x` or `model`, not both", {
    expect_error(sigelImpute(target = matrix(1, 2, 2)),
                 "as `x` or as `model`, not neither")
    expect_error(sigelImputeCV("a", target = matrix(1, 2, 2), model = "b"),
                 "not both")
})
