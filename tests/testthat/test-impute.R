# sigelImpute / sigelImputeCV

# reference = the tiny fitted MOB SCE; panel = the same spots lacking genes
.impute_panel <- function(sce, n_missing = 15L) {
    sce[seq_len(nrow(sce) - n_missing), ]
}

test_that("sigelImpute on an SCE panel adds an altExp of imputed + measured genes", {
    skip_if_no_sigel_python()
    ref <- sigel_tiny_fit()
    panel <- .impute_panel(sigel_tiny_sce())
    missing <- setdiff(rownames(ref), rownames(panel))
    out <- sigelImpute(ref, panel, method = "knn")
    expect_s4_class(out, "SingleCellExperiment")
    expect_identical(dim(out), dim(panel))
    imp <- SingleCellExperiment::altExp(out, "sigel_imputed")
    expect_identical(colnames(imp), colnames(panel))
    rd <- SummarizedExperiment::rowData(imp)
    expect_setequal(rownames(imp)[rd$imputed], missing)
    expect_setequal(rownames(imp)[!rd$imputed], rownames(panel))
    expect_true(all(rd$confidence[rd$imputed] >= 0 &
                        rd$confidence[rd$imputed] <= 1))
    expect_true(all(is.na(rd$confidence[!rd$imputed])))
    m <- SummarizedExperiment::assay(imp, "imputed")
    expect_true(all(is.finite(m)) && min(m) >= 0 && max(m) <= 1)
    det <- S4Vectors::metadata(imp)$sigelImpute
    expect_equal(det$n_shared, nrow(panel))
    expect_equal(det$params$method, "knn")

    # a GAN run (few steps), chosen genes, reproducible with a seed
    g <- missing[1:3]
    a <- sigelImpute(ref, panel, genes = g, n_steps = 5L, seed = 2L,
                     channels = 16L, hidden = 32L)
    b <- sigelImpute(ref, panel, genes = g, n_steps = 5L, seed = 2L,
                     channels = 16L, hidden = 32L)
    ia <- SingleCellExperiment::altExp(a, "sigel_imputed")
    expect_equal(sum(SummarizedExperiment::rowData(ia)$imputed), 3L)
    expect_identical(
        SummarizedExperiment::assay(ia, "imputed"),
        SummarizedExperiment::assay(
            SingleCellExperiment::altExp(b, "sigel_imputed"), "imputed"))
})

test_that("sigelImpute on a Seurat panel and on a count matrix", {
    skip_if_no_sigel_python()
    ref <- sigel_tiny_fit()
    sce <- .impute_panel(sigel_tiny_sce())
    counts <- SummarizedExperiment::assay(sce, "counts")
    so <- sigel_fake_visium(counts)
    coords <- as.data.frame(SummarizedExperiment::colData(sce))[, c("x", "y")]
    res <- sigelImpute(ref, counts, coords = coords, method = "mean")
    expect_s4_class(res, "SingleCellExperiment")
    expect_equal(sum(SummarizedExperiment::rowData(res)$imputed), 15L)
    so <- sigelImpute(ref, so, method = "knn", name = "imp")
    expect_true("imp" %in% SeuratObject::Assays(so))
    mf <- so[["imp"]][[]]
    expect_equal(sum(mf$sigel.imputed), 15L)
    expect_equal(so@tools$sigelImpute$params$method, "knn")
})

test_that("sigelImputeCV returns per-gene metrics and a summary", {
    skip_if_no_sigel_python()
    ref <- sigel_tiny_fit()
    cv <- sigelImputeCV(ref, sigel_tiny_sce(), k = 3L,
                        method = c("knn", "mean"))
    expect_named(cv, c("genes", "summary"))
    expect_true(all(c("gene", "method", "fold", "PCC", "SSIM", "RMSE", "JS",
                      "confidence") %in% colnames(cv$genes)))
    expect_equal(nrow(cv$genes), 2L * nrow(sigel_tiny_sce()))
    expect_setequal(cv$summary$method, c("knn", "mean"))
    expect_true("AS" %in% colnames(cv$summary))
})

test_that("sigelImpute checks its inputs in R", {
    skip_if_no_sigel_python()
    ref <- sigel_tiny_fit()
    panel <- .impute_panel(sigel_tiny_sce())
    expect_error(sigelImpute(ref, panel, method = "nope"), "should be one of")
    expect_error(sigelImpute(ref, panel, n_steps = 0), "n_steps")
    expect_error(sigelImpute(ref, panel, foo = 1), "unknown argument")
    expect_error(sigelImpute(ref, panel, neighbour_prior = "yes"),
                 "`neighbour_prior` must be TRUE or FALSE")
    expect_error(sigelImpute(ref, list()), "target")
    expect_error(sigelImpute(ref, panel, genes = "no_such_gene",
                             method = "knn"), "cannot be imputed")
    expect_error(sigelImputeCV(ref, panel, k = 1), "`k`")
    expect_error(sigelImputeCV(ref, panel, method = "x"), "method")
})
