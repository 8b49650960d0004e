# The model travels inside the R object: after saveRDS() and readRDS() in a
# new R process, without the original model directory, every task works.

test_that("the model object carries its files and restores them", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    mdl <- sigelModel(sce)
    expect_true(all(c("config.json", "weights.safetensors") %in%
                        names(mdl@files)))
    expect_true(all(vapply(mdl@files, is.raw, logical(1))))
    on_disk <- readBin(file.path(mdl@path, "weights.safetensors"), "raw",
                       n = 1e8)
    expect_identical(mdl@files[["weights.safetensors"]], on_disk)
    # a model whose directory is gone is written back under tempdir()
    gone <- mdl
    gone@path <- file.path(tempdir(), "sigel-no-such-dir")
    dir <- sigel:::.model_path(gone)
    expect_false(identical(dir, gone@path))
    expect_true(file.exists(file.path(dir, "config.json")))
    expect_identical(sigel:::.model_path(gone), dir)   # once per session
    expect_output(show(gone), "restored from the object")
    # saveSigelModel() works from the carried bytes
    out <- file.path(tempdir(), "sigel-saved-from-bytes")
    unlink(out, recursive = TRUE)
    saveSigelModel(gone, out)
    expect_identical(
        readBin(file.path(out, "weights.safetensors"), "raw", n = 1e8),
        on_disk)
    # an old object without files and without its directory: clear error
    bare <- methods::new("SigelModel", path = gone@path, config = list())
    expect_error(sigel:::.model_path(bare), "carries no copy")
})

test_that("saveRDS -> new R process: tasks work without the model dir", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_sce()
    dir <- file.path(tempdir(), "sigel-persist-model")
    unlink(dir, recursive = TRUE)
    fit <- do.call(runSIGEL, c(list(sce), sigel_tiny_hyper(),
                               list(seed = 1L, verbose = FALSE,
                                    n_threads = 1L, model_dir = dir)))
    f <- tempfile(fileext = ".rds")
    saveRDS(fit, f)
    unlink(dir, recursive = TRUE)     # as if the session's tempdir was gone
    expect_false(dir.exists(dir))
    out <- tempfile(fileext = ".rds")
    script <- tempfile(fileext = ".R")
    writeLines(c(
        "suppressPackageStartupMessages(library(sigel))",
        "args <- commandArgs(trailingOnly = TRUE)",
        "x <- readRDS(args[1])",
        "stopifnot(!dir.exists(sigelModel(x)@path))",
        "x <- sigelSVG(x, n_null = 3L, seed = 1L)",
        "pr <- sigelPruneGenes(x, keep = 0.5, score = 'morans_i')",
        "pr2 <- sigelPruneGenes(x, model = x, keep = 0.5, score = 'morans_i')",
        "nb <- sigelNeighbors(x, k = 3L)",
        "nb2 <- sigelNeighbors(NULL, k = 3L, model = sigelModel(x))",
        "new <- runSIGEL(x, model = x, verbose = FALSE)",
        "panel <- x[1:40, ]",
        "imp <- sigelImpute(x, panel, method = 'knn', seed = 1L)",
        "imp2 <- sigelImpute(target = panel, model = sigelModel(x),",
        "                    method = 'knn', seed = 1L)",
        "saveRDS(list(svg = S4Vectors::metadata(x)$sigel_svg, prune = pr,",
        "             prune2 = pr2, nb = nb, nb2 = nb2,",
        "             emb_new = sigelEmbeddings(new),",
        "             imputed = rownames(SingleCellExperiment::altExp(imp,",
        "                 'sigel_imputed')),",
        "             imputed2 = rownames(SingleCellExperiment::altExp(imp2,",
        "                 'sigel_imputed'))), args[2])"),
        script)
    st <- system2(file.path(R.home("bin"), "Rscript"),
                  c(shQuote(script), shQuote(f), shQuote(out)),
                  stdout = TRUE, stderr = TRUE)
    status <- attr(st, "status")
    expect_true(is.null(status) || identical(status, 0L),
                info = paste(st, collapse = "\n"))
    expect_true(file.exists(out), info = paste(st, collapse = "\n"))
    r <- readRDS(out)
    genes <- rownames(sigelEmbeddings(fit))
    expect_setequal(rownames(r$svg), genes)
    expect_true(all(is.finite(r$svg$score)))
    expect_gt(nrow(r$prune), 0L)
    expect_identical(r$prune, r$prune2)
    expect_identical(r$nb, r$nb2)
    expect_setequal(unique(r$nb$query), genes)
    # transform with the restored model reproduces the fitted embeddings
    expect_equal(r$emb_new[genes, ], sigelEmbeddings(fit)[genes, ],
                 tolerance = 1e-4)
    expect_true(all(setdiff(genes, rownames(sce)[1:40]) %in% r$imputed))
    expect_identical(r$imputed2, r$imputed)
})

test_that("a Seurat object keeps its model in Tool() through saveRDS", {
    skip_if_no_sigel_python()
    skip_if_not_installed("Seurat")
    sce <- sigel_tiny_sce(40L)
    so <- sigel_fake_visium(SummarizedExperiment::assay(sce, "counts"))
    dir <- file.path(tempdir(), "sigel-persist-seurat")
    unlink(dir, recursive = TRUE)
    so <- do.call(runSIGEL, c(list(so), sigel_tiny_hyper(),
                              list(seed = 1L, verbose = FALSE,
                                   n_threads = 1L, model_dir = dir)))
    f <- tempfile(fileext = ".rds")
    saveRDS(so, f)
    unlink(dir, recursive = TRUE)
    back <- readRDS(f)
    expect_true(length(sigelModel(back)@files) >= 2L)
    sel <- sigelPruneGenes(back, keep = 0.5, score = "morans_i")
    expect_gt(nrow(sel), 0L)
    again <- runSIGEL(back, model = back, verbose = FALSE)
    g <- rownames(sigelEmbeddings(so))
    expect_equal(sigelEmbeddings(again)[g, ], sigelEmbeddings(so)[g, ],
                 tolerance = 1e-4)
})
