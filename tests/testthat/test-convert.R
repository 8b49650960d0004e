# R <-> Python conversion (needs the backend).

test_that("counts + coordinates become an AnnData where the backend looks", {
    skip_if_no_sigel_python()
    m <- matrix(c(0, 1, 2, 3, 4, 5, 0, 0, 7, 1, 1, 1), 3, 4,
                dimnames = list(c("a", "b", "c"), paste0("s", 1:4)))
    ad <- sigel:::.anndata_from_parts(
        m, list(obs = data.frame(x = 1:4, y = c(2, 2, 3, 3))),
        library_size = c(10, 20, 30, 40))
    expect_equal(unlist(reticulate::py_to_r(ad$shape)), c(4L, 3L))
    expect_true(reticulate::import("scipy.sparse")$isspmatrix_csr(ad$X))
    expect_equal(as.matrix(sigel:::.py_sparse(ad$X)), unname(t(m)))
    obs <- sigel:::.py_df(ad$obs)
    expect_equal(rownames(obs), colnames(m))
    expect_equal(obs$x, 1:4)
    expect_equal(obs$sigel_library_size, c(10, 20, 30, 40))
    expect_equal(sigel:::.py_chr(ad$var_names), rownames(m))

    ad2 <- sigel:::.anndata_from_parts(
        methods::as(m, "CsparseMatrix"),
        list(obs = data.frame(row.names = 1:4), obsm = cbind(1:4 / 2, 4:1)))
    sp <- sigel:::.py_matrix(ad2$obsm$`__getitem__`("spatial"))
    expect_equal(sp, cbind(1:4 / 2, 4:1), ignore_attr = TRUE)
})

test_that(".as_anndata works for SCE, Seurat and matrices", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_sce(20)
    ad <- sigel:::.as_anndata(sce)
    expect_equal(unlist(reticulate::py_to_r(ad$shape)), c(262L, 20L))
    obs <- sigel:::.py_df(ad$obs)
    expect_true(all(c("x", "y", "layer") %in% colnames(obs)))
    expect_s3_class(obs$layer, "factor")
    expect_equal(obs$x, sce$x)
    # the backend builds the same grid images from it as from its own copy
    gi <- sigel:::.sigel_py()$GeneImages
    py <- sigel:::.sigel_py()$datasets$mouse_olfactory_bulb()
    py <- py$`__getitem__`(reticulate::tuple(
        reticulate::import_builtins()$slice(NULL), as.list(rownames(sce))))
    a <- gi$from_anndata(ad)
    b <- gi$from_anndata(py)
    expect_equal(sigel:::.py_sparse(a$values), sigel:::.py_sparse(b$values))

    skip_if_not_installed("SeuratObject")
    so <- suppressWarnings(SeuratObject::CreateSeuratObject(
        SummarizedExperiment::assay(sce, "counts"),
        meta.data = as.data.frame(SummarizedExperiment::colData(sce))[, c("x", "y")]))
    ad3 <- sigel:::.as_anndata(so)
    expect_equal(unlist(reticulate::py_to_r(ad3$shape)), c(262L, 20L))
    ad4 <- sigel:::.as_anndata(SummarizedExperiment::assay(sce, "counts"),
                               coords = unname(SingleCellExperiment::reducedDim(sce, "spatial")))
    expect_true(reticulate::py_to_r(ad4$obsm$`__contains__`("spatial")))
    expect_equal(ncol(sigel:::.py_df(ad4$obs)), 0L)
})

test_that("pandas, numpy and scipy objects come back as R objects", {
    skip_if_no_sigel_python()
    pd <- reticulate::import("pandas", convert = FALSE)
    np <- reticulate::import("numpy", convert = FALSE)
    df <- reticulate::py_eval(paste0(
        "__import__('pandas').DataFrame({'i': [1, 2, 3], 'f': [0.5, None, 2.0],",
        " 'b': [True, False, True], 's': ['u', None, 'w'],",
        " 'c': __import__('pandas').Categorical(['p', 'q', 'p'])},",
        " index=['g1', 'g2', 'g3'])"), convert = FALSE)
    r <- sigel:::.py_df(df)
    expect_equal(rownames(r), c("g1", "g2", "g3"))
    expect_identical(r$i, 1:3)
    expect_equal(r$f, c(0.5, NA, 2))
    expect_identical(r$b, c(TRUE, FALSE, TRUE))
    expect_identical(r$s, c("u", NA, "w"))
    expect_equal(r$c, factor(c("p", "q", "p")))
    nullable <- reticulate::py_eval(paste0(
        "__import__('pandas').DataFrame({'n': __import__('pandas').array([1, None, 3], dtype='Int64'),",
        " 'b': __import__('pandas').array([True, None, False], dtype='boolean')})"), convert = FALSE)
    r3 <- sigel:::.py_df(nullable)
    expect_identical(r3$n, c(1L, NA, 3L))
    expect_identical(r3$b, c(TRUE, NA, FALSE))
    # RangeIndex -> default rownames
    r2 <- sigel:::.py_df(df$reset_index(drop = TRUE))
    expect_equal(rownames(r2), c("1", "2", "3"))

    a <- np$arange(6L)$reshape(c(2L, 3L))
    expect_equal(sigel:::.py_matrix(a, rownames = c("a", "b")),
                 matrix(c(0, 3, 1, 4, 2, 5), 2, dimnames = list(c("a", "b"), NULL)))
    sp <- reticulate::import("scipy.sparse", convert = FALSE)
    s <- sp$random(50L, 30L, density = 0.1, format = "csr", random_state = 1L)
    d <- sigel:::.py_sparse(s, rownames = paste0("r", 1:50))
    expect_s4_class(d, "dgCMatrix")
    expect_equal(as.matrix(d), sigel:::.py_matrix(s$toarray()), ignore_attr = TRUE)
    expect_equal(rownames(d)[50], "r50")
})

test_that("Python exceptions become R errors with the Python message only", {
    skip_if_no_sigel_python()
    err <- tryCatch(sigel:::.py_call(sigel:::.sigel_py()$SIGEL(embed_dim = -1L)),
                    error = conditionMessage)
    expect_equal(err, "`embed_dim` must be > 0; got -1")
    expect_false(grepl("Traceback", err))
    err <- tryCatch(sigel:::.py_call(sigel:::.sigel_py()$SIGEL$load("/nonexistent/x"),
                                     "could not load"), error = conditionMessage)
    expect_match(err, "^could not load: no saved model at")
})
