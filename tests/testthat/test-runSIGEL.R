# runSIGEL() on every input class with the real backend (tiny data, tiny
# models), compared with the Python model run directly.

test_that("R arguments mirror the Python hyper-parameters (names, defaults)", {
    skip_if_no_sigel_python()
    sigel:::.sigel_py()
    defaults <- reticulate::py_eval(paste0(
        "{k: v.default for k, v in __import__('inspect').signature(",
        "__import__('sigel').SIGEL).parameters.items()}"))
    py_names <- names(defaults)
    r_formals <- formals(sigel:::.sigel_hyper)
    expect_equal(names(r_formals), py_names)
    for (nm in py_names) {
        expect_equal(r_formals[[nm]], defaults[[nm]], info = nm)
        if (is.numeric(defaults[[nm]]) && !is.null(defaults[[nm]])) {
            # Python ints are R integers (so they reach Python as ints)
            expect_identical(is.integer(r_formals[[nm]]),
                             is.integer(defaults[[nm]]), info = nm)
        }
    }
    # every method of the generic carries them
    for (f in c(".run_sce", ".run_matrix", ".run_any")) {
        fm <- formals(utils::getFromNamespace(f, "sigel"))
        expect_equal(as.list(fm)[py_names], as.list(r_formals), info = f)
    }
})

test_that("SCE: results stored natively and equal to the Python model's", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    genes <- rownames(sce)
    emb <- sigelEmbeddings(sce)
    expect_equal(dim(emb), c(60L, 8L))
    expect_setequal(rownames(emb), genes)
    mem <- sigelMemberships(sce)
    expect_equal(dim(mem), c(60L, 3L))
    expect_equal(unname(rowSums(mem)), rep(1, 60), tolerance = 1e-6)
    rd <- SummarizedExperiment::rowData(sce)
    expect_type(rd$sigel_context, "integer")
    expect_equal(rd$sigel_context, sigelContexts(sce)[genes, "context"])
    h <- sigelHistory(sce)
    expect_s3_class(h, "data.frame")
    expect_equal(nrow(h), 2L)
    expect_true(all(c("epoch", "loss") %in% colnames(h)))
    rdim <- SingleCellExperiment::reducedDim(sce, "sigel")
    expect_equal(dim(rdim), c(262L, 8L))
    expect_equal(attr(rdim, "rotation"), emb)
    expect_s4_class(sigelModel(sce), "SigelModel")
    expect_true(dir.exists(sigelModel(sce)@path))

    # the same model run directly in Python on the same data, same seed
    py <- sigel:::.sigel_py()
    ad <- py$datasets$mouse_olfactory_bulb()
    ad <- ad$`__getitem__`(reticulate::tuple(
        reticulate::import_builtins()$slice(NULL), as.list(genes)))
    hyper <- lapply(sigel_tiny_hyper(), as.integer)
    m <- do.call(py$SIGEL, hyper)
    m$fit(ad, seed = 1L, progress = FALSE, n_threads = 1L)
    py_emb <- sigel:::.py_df_matrix(m$embeddings_)
    py_ctx <- sigel:::.py_df(m$contexts_)
    expect_equal(emb, py_emb[rownames(emb), ], tolerance = 1e-6)
    expect_equal(rd$sigel_context, py_ctx[genes, "context"])
    expect_equal(rd$sigel_confidence, py_ctx[genes, "confidence"],
                 tolerance = 1e-6)
    expect_equal(mem, sigel:::.py_df_matrix(m$memberships_)[rownames(mem), ],
                 tolerance = 1e-6)
})

test_that("matrix input gives the same result; Seurat renaming is handled", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    m <- SummarizedExperiment::assay(sce, "counts")
    rownames(m)[rownames(m) == "Apoe"] <- "Apo_e"
    xy <- as.data.frame(SummarizedExperiment::colData(sce))[, c("x", "y")]
    res <- do.call(runSIGEL, c(list(m, coords = xy), sigel_tiny_hyper(),
                               list(seed = 1L, verbose = FALSE, n_threads = 1L)))
    expect_s3_class(res, "SigelResult")
    expect_output(print(res), "60 genes x 8 dims, 3 contexts")
    e1 <- sigelEmbeddings(res)
    e0 <- sigelEmbeddings(sce)
    rownames(e0)[rownames(e0) == "Apoe"] <- "Apo_e"
    expect_equal(e1, e0[rownames(e1), ], tolerance = 1e-6)
    expect_equal(dim(res$spot_embeddings), c(262L, 8L))

    # a Seurat object (feature "Apo-e") embedded with that model: the genes
    # are matched to the model's "Apo_e" and keep the Seurat name
    skip_if_not_installed("SeuratObject")
    so <- suppressWarnings(SeuratObject::CreateSeuratObject(m, meta.data = xy))
    expect_true("Apo-e" %in% rownames(so))
    expect_message(so2 <- runSIGEL(so, model = sigelModel(res), verbose = FALSE),
                   "matched 1 genes")
    load <- SeuratObject::Loadings(so2, "sigel")
    expect_true("Apo-e" %in% rownames(load))
    expect_equal(unname(load["Apo-e", ]), unname(e1["Apo_e", ]), tolerance = 1e-5)
})

test_that("Seurat: DimReduc, feature meta data and Tool() equal the fit", {
    skip_if_no_sigel_python()
    skip_if_not_installed("SeuratObject")
    sce <- sigel_tiny_fit()
    xy <- as.data.frame(SummarizedExperiment::colData(sce))[, c("x", "y")]
    so <- suppressWarnings(SeuratObject::CreateSeuratObject(
        SummarizedExperiment::assay(sce, "counts"), assay = "Spatial",
        meta.data = xy))
    so <- do.call(runSIGEL, c(list(so), sigel_tiny_hyper(),
                              list(seed = 1L, verbose = FALSE, n_threads = 1L)))
    dr <- so[["sigel"]]
    expect_s4_class(dr, "DimReduc")
    expect_equal(SeuratObject::Key(dr), "SIGEL_")
    load <- SeuratObject::Loadings(dr)
    expect_equal(colnames(load), paste0("SIGEL_", 1:8))
    e0 <- sigelEmbeddings(sce)
    expect_equal(unname(load), unname(e0[rownames(load), ]), tolerance = 1e-6)
    ce <- SeuratObject::Embeddings(dr)
    expect_equal(dim(ce), c(262L, 8L))
    expect_equal(rownames(ce), colnames(so))
    mf <- so[["Spatial"]][[]]
    expect_equal(mf[rownames(sce), "sigel.context"],
                 SummarizedExperiment::rowData(sce)$sigel_context)
    expect_equal(mf[rownames(sce), "sigel.confidence"],
                 SummarizedExperiment::rowData(sce)$sigel_confidence,
                 tolerance = 1e-6)
    tool <- SeuratObject::Tool(so, "runSIGEL")
    expect_true(all(c("memberships", "history", "model") %in% names(tool)))
    expect_equal(sigelMemberships(so), sigelMemberships(sce)[rownames(sigelMemberships(so)), ],
                 tolerance = 1e-6)
})

test_that("Seurat Visium image and SCE with array coordinates embed", {
    skip_if_no_sigel_python()
    skip_if_not_installed("Seurat")
    sce <- sigel_tiny_fit()
    m <- SummarizedExperiment::assay(sce, "counts")
    row <- round(sce$y)
    col <- 2 * round(sce$x) + row %% 2
    vis <- sigel_fake_visium(m, row = row, col = col)
    vis <- runSIGEL(vis, model = sigelModel(sce), verbose = FALSE)
    expect_equal(dim(SeuratObject::Loadings(vis, "sigel")), c(60L, 8L))
    expect_match(SeuratObject::Tool(vis, "runSIGEL")$params$where, "array row/col")
    # the same hexagonal coordinates on a SCE give the same embeddings
    sce2 <- SingleCellExperiment::SingleCellExperiment(
        list(counts = m), colData = S4Vectors::DataFrame(array_row = row, array_col = col))
    sce2 <- runSIGEL(sce2, model = sigelModel(sce), verbose = FALSE)
    expect_equal(sigelEmbeddings(sce2),
                 sigelEmbeddings(vis)[rownames(sigelEmbeddings(sce2)), ],
                 tolerance = 1e-6)
})

test_that("save / load round trip; objects survive saveRDS", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    dir <- file.path(tempdir(), "sigel-test-model")
    unlink(dir, recursive = TRUE)
    saved <- saveSigelModel(sce, dir)
    expect_s4_class(saved, "SigelModel")
    expect_true(file.exists(file.path(dir, "config.json")))
    expect_error(saveSigelModel(sce, dir), "already exists")
    expect_silent(saveSigelModel(sce, dir, overwrite = TRUE))
    # overwrite replaces the model's own files and never deletes others
    notes <- file.path(dir, "my-notes.txt")
    writeLines("keep me", notes)
    expect_silent(saveSigelModel(sce, dir, overwrite = TRUE))
    expect_identical(readLines(notes), "keep me")
    file.remove(notes)
    model <- loadSigelModel(dir)
    expect_output(show(model), "60")
    expect_equal(model@config$embed_dim, 8L)
    # embedding the same data with the loaded model reproduces the fit
    new <- runSIGEL(sce, model = model, verbose = FALSE)
    expect_equal(sigelEmbeddings(new), sigelEmbeddings(sce)[rownames(sigelEmbeddings(new)), ],
                 tolerance = 1e-5)
    expect_equal(SummarizedExperiment::rowData(new)$sigel_context,
                 SummarizedExperiment::rowData(sce)$sigel_context)
    new2 <- runSIGEL(sce, model = dir, verbose = FALSE)     # a path works too
    expect_equal(sigelEmbeddings(new2), sigelEmbeddings(new))
    # draws: the model's own number (rarefy_draws = 4) unless told; one draw
    # reads other (noisier) vectors; only with `model =`
    four <- runSIGEL(sce, model = model, draws = 4, verbose = FALSE)
    expect_equal(sigelEmbeddings(four), sigelEmbeddings(new), tolerance = 1e-6)
    one <- runSIGEL(sce, model = model, draws = 1L, verbose = FALSE)
    expect_identical(rownames(sigelEmbeddings(one)), rownames(sigelEmbeddings(new)))
    expect_gt(max(abs(sigelEmbeddings(one) - sigelEmbeddings(new))), 1e-3)
    expect_error(runSIGEL(sce, model = model, draws = 0, verbose = FALSE),
                 "`draws` must be")
    expect_error(runSIGEL(sce, model = model, draws = "many", verbose = FALSE),
                 "\"depth\"")
    expect_error(runSIGEL(sigel_tiny_sce(), draws = 2, verbose = FALSE),
                 "rarefy_draws")

    # saveRDS / readRDS keeps a path, not a Python pointer
    f <- tempfile(fileext = ".rds")
    saveRDS(sce, f)
    back <- readRDS(f)
    expect_identical(sigelEmbeddings(back), sigelEmbeddings(sce))
    assign("models", NULL, envir = sigel:::.sigel_env)      # forget the cache
    py <- sigel:::.sigel_model_py(back)
    expect_equal(sigel:::.py_df_matrix(py$embeddings_), sigelEmbeddings(sce),
                 tolerance = 1e-6)

    expect_error(loadSigelModel(file.path(tempdir(), "no-such-model")),
                 "does not exist")
    bad <- tempfile(); dir.create(bad)
    writeLines("{}", file.path(bad, "config.json"))
    expect_error(loadSigelModel(bad), "not a saved SIGEL model")
    gone <- methods::new("SigelModel", path = tempfile(), config = list())
    expect_error(sigel:::.sigel_model_py(gone), "no longer exists")
})

test_that("Python errors reach R as one-line R errors", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_sce(20)
    err <- tryCatch(runSIGEL(sce, n_contexts = 50, epochs = 1, verbose = FALSE),
                    error = conditionMessage)
    expect_match(err, "n_contexts.*larger than the number of genes")
    expect_false(grepl("Traceback|File \"", err))
    err <- tryCatch(runSIGEL(sce, width = 30, epochs = 1, verbose = FALSE),
                    error = conditionMessage)
    expect_match(err, "`width` must be divisible by 4")
})

test_that("plots are ggplots", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    p <- plotContexts(sce)
    expect_s3_class(p, "ggplot")
    expect_equal(nlevels(p$data$panel), 3L)
    p0 <- plotContexts(sce, contexts = 0)
    expect_equal(nlevels(p0$data$panel), 1L)
    expect_s3_class(plotContexts(sce, type = "embedding"), "ggplot")
    g <- rownames(sce)[1:2]
    p2 <- plotGeneImages(sce, g)
    expect_s3_class(p2, "ggplot")
    expect_equal(levels(p2$data$panel), g)
    expect_true(all(p2$data$value >= 0 & p2$data$value <= 1))
    expect_s3_class(plotGeneImages(sigel_tiny_sce(5), g), "ggplot")
    expect_error(plotGeneImages(sce, "nope"), "nope")
    expect_error(sigelEmbeddings(sigel_tiny_sce(5)), "run runSIGEL")
})

test_that("spot embeddings come from Python's tl.spot_embeddings and match the formula", {
    skip_if_no_sigel_python()
    set.seed(3)
    counts <- matrix(rpois(12 * 40, 4), 12, 40,
                     dimnames = list(paste0("g", 1:12), paste0("s", 1:40)))
    emb <- matrix(rnorm(10 * 3), 10, 3, dimnames = list(paste0("g", 10:1), NULL))
    S <- sigel:::.spot_embeddings(counts, emb)
    lib <- colSums(counts)
    L <- log1p(sweep(counts, 2, median(lib) / lib, "*"))[rownames(emb), ]
    want <- t(L - rowMeans(L)) %*% emb / nrow(emb)
    expect_equal(unname(S), unname(want), tolerance = 1e-5)
    expect_equal(rownames(S), colnames(counts))
    expect_equal(colnames(S), paste0("SIGEL_", 1:3))
})
