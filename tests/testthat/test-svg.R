# sigelSVG(), sigelPatternSearch(), sigelCompareSVG() against the real backend.

.svg_fixture <- local({
    cache <- NULL
    function() {
        if (is.null(cache)) {
            sce <- sigelExampleData()
            tot <- Matrix::rowSums(SummarizedExperiment::assay(sce))
            sce <- sce[order(-tot)[1:60], ]
            cache <<- runSIGEL(sce, epochs = 2, pretrain_epochs = 1,
                               n_contexts = 3, embed_dim = 8, seed = 1,
                               verbose = FALSE)
        }
        cache
    }
})

test_that("input errors are raised in R", {
    skip_if_no_sigel_python()
    sce <- .svg_fixture()
    expect_error(sigelSVG(sce, draws = 0), "draws")
    expect_error(sigelCompareSVG(sce, draws = 1.5), "draws")
    expect_error(sigelSVG(sce, draws = "deep"), "depth")
    expect_error(sigelSVG(sce, metric = "manhattan"), "arg")
    expect_error(sigelSVG(sce, reference = "bin"), "arg")
    expect_error(sigelSVG(sce, n_null = 0), "n_null")
    expect_error(sigelSVG(sce, n_null = 1, reference = "gene"), "n_null")
    expect_error(sigelSVG(sigelExampleData()), "runSIGEL")
    expect_error(sigelPatternSearch(sce, rep(TRUE, 3)), "3 values")
    expect_error(sigelPatternSearch(sce, rep(TRUE, ncol(sce)),
                                    quantiles = c(pattern = 2,
                                                  background = 0.5)),
                 "\\[0, 1\\]")
    expect_error(sigelCompareSVG(sce, top_k = 0), "top_k")
})

test_that("sigelSVG writes scores to rowData", {
    skip_if_no_sigel_python()
    sce <- .svg_fixture()
    out <- sigelSVG(sce, n_null = 4, seed = 2)
    rd <- SummarizedExperiment::rowData(out)
    for (cl in c("score", "pval", "qval", "rank")) {
        expect_true(paste0("sigel_svg_", cl) %in% colnames(rd))
    }
    tab <- S4Vectors::metadata(out)$sigel_svg
    expect_s3_class(tab, "data.frame")
    expect_identical(colnames(tab), c("score", "pval", "qval", "rank", "bin",
                                      "mean"))
    expect_true(all(rownames(tab) %in% rownames(out)))
    expect_equal(rd[rownames(tab), "sigel_svg_score"], tab$score)
    expect_true(all(tab$pval > 0 & tab$pval <= 1))
    # same seed, same scores
    again <- S4Vectors::metadata(sigelSVG(sce, n_null = 4, seed = 2))$sigel_svg
    expect_equal(again$score, tab$score)
    # more depth-matched draws per vector: a different (less noisy) reading of the same genes
    more <- S4Vectors::metadata(sigelSVG(sce, n_null = 4, seed = 2,
                                         draws = 8))$sigel_svg
    expect_setequal(rownames(more), rownames(tab))
    expect_false(isTRUE(all.equal(more[rownames(tab), "score"], tab$score)))
    # draws = "depth": each gene read as often as its counts allow
    dep <- S4Vectors::metadata(sigelSVG(sce, n_null = 4, seed = 2,
                                        draws = "depth"))$sigel_svg
    expect_equal(dep[rownames(tab), "score"], tab$score)  # the default
    four <- S4Vectors::metadata(sigelSVG(sce, n_null = 4, seed = 2,
                                         draws = NULL))$sigel_svg
    expect_setequal(rownames(four), rownames(tab))
    expect_true(all(four$pval > 0 & four$pval <= 1))
    # reference = "level" is the default; "gene" compares each gene with its own controls
    lev <- S4Vectors::metadata(sigelSVG(sce, n_null = 4, seed = 2,
                                        reference = "level"))$sigel_svg
    expect_equal(lev[rownames(tab), "score"], tab$score)
    own <- S4Vectors::metadata(sigelSVG(sce, n_null = 4, seed = 2,
                                        reference = "gene"))$sigel_svg
    expect_setequal(rownames(own), rownames(tab))
    expect_false(isTRUE(all.equal(own[rownames(tab), "score"], tab$score)))
    # a count matrix with the model
    m <- as.matrix(SummarizedExperiment::assay(sce))
    cd <- SummarizedExperiment::colData(sce)
    tab2 <- sigelSVG(m, n_null = 4, seed = 2, model = sce,
                     coords = data.frame(x = cd$x, y = cd$y,
                                         row.names = colnames(sce)))
    expect_s3_class(tab2, "data.frame")
    expect_equal(tab2[rownames(tab), "score"], tab$score, tolerance = 1e-5)
})

test_that("sigelPatternSearch ranks genes and returns the template image", {
    skip_if_no_sigel_python()
    sce <- .svg_fixture()
    y <- SummarizedExperiment::colData(sce)$y
    hits <- sigelPatternSearch(sce, y > stats::median(y), n_draws = 3)
    expect_identical(colnames(hits), c("similarity", "similarity_sd", "rank"))
    expect_identical(hits$rank, seq_len(nrow(hits)))
    expect_true(is.matrix(attr(hits, "pseudo_image")))
    lab <- ifelse(y > stats::median(y), "up", "down")
    hits2 <- sigelPatternSearch(sce, lab, quantiles = c(up = 0.9, down = 0.4),
                                n_draws = 2, taper = 1, engine = "r")
    expect_equal(nrow(hits2), nrow(hits))
})

test_that("sigelCompareSVG reports the three rankings", {
    skip_if_no_sigel_python()
    sce <- .svg_fixture()
    cmp <- sigelCompareSVG(sce, n_null = 4, top_k = c(5, 10))
    expect_named(cmp, c("table", "spearman", "overlap", "seconds"))
    expect_true(all(c("sigel_rank", "sparkx_rank", "moran_rank",
                      "sparkx_pval", "moran_I") %in% colnames(cmp$table)))
    expect_equal(dim(cmp$spearman), c(3L, 3L))
    expect_equal(unname(diag(cmp$spearman)), rep(1, 3))
    expect_equal(nrow(cmp$overlap), 6L)
    expect_true(all(cmp$overlap$fraction >= 0 & cmp$overlap$fraction <= 1))
    expect_named(cmp$seconds, c("sigel", "sparkx", "moran"))
})
