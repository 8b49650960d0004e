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
    full <- py$datasets$mouse_olfactory_bulb()
    # R ships an exact subset (2,000 genes) of Python's full data set
    expect_equal(reticulate::py_to_r(full$n_vars), 12947L)
    expect_equal(nrow(sce), 2000L)
    all_genes <- as.character(reticulate::py_to_r(full$var_names$tolist()))
    expect_true(all(rownames(sce) %in% all_genes))
    expect_identical(rownames(sce), all_genes[all_genes %in% rownames(sce)])
    ad <- full$`__getitem__`(reticulate::tuple(
        reticulate::import_builtins()$slice(NULL), as.list(rownames(sce))))
    expect_equal(reticulate::py_to_r(ad$n_obs), ncol(sce))
    expect_equal(as.character(reticulate::py_to_r(ad$var_names$tolist())),
                 rownames(sce))
    expect_equal(sum(SummarizedExperiment::assay(sce, "counts")),
                 reticulate::py_to_r(ad$X$sum()))
})
