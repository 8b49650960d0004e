test_that("the example data is a SingleCellExperiment with coordinates", {
    sce <- sigelExampleData()
    expect_s4_class(sce, "SingleCellExperiment")
    expect_equal(ncol(sce), 262L)
    expect_true(all(c("x", "y", "layer") %in% colnames(SummarizedExperiment::colData(sce))))
    expect_equal(dim(SingleCellExperiment::reducedDim(sce, "spatial")), c(262L, 2L))
    expect_s4_class(SummarizedExperiment::assay(sce, "counts"), "dgCMatrix")
    expect_false(anyDuplicated(rownames(sce)) > 0)
})

test_that("the Python backend is reachable through reticulate", {
    skip_if_no_sigel_python()
    info <- sigelBackendInfo()
    expect_true(is.list(info))
    expect_true(all(c("python", "sigel", "torch", "numpy", "device") %in% names(info)))
    expect_equal(info$numpy_major, 1L)
})

test_that("R and Python read the same bundled data", {
    skip_if_no_sigel_python()
    sce <- sigelExampleData()
    py <- reticulate::import("sigel", convert = FALSE)
    ad <- py$datasets$mouse_olfactory_bulb()
    expect_equal(reticulate::py_to_r(ad$n_obs), ncol(sce))
    expect_equal(as.character(reticulate::py_to_r(ad$var_names$tolist())),
                 rownames(sce))
    expect_equal(sum(SummarizedExperiment::assay(sce, "counts")),
                 reticulate::py_to_r(ad$X$sum()))
})
