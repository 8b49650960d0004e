# Input extraction and validation: all raised in R, before Python is called
# (none of these tests needs the backend).

mini_counts <- function(G = 5, S = 6) {
    m <- matrix(rpois(G * S, 3), G, S,
                dimnames = list(paste0("g", seq_len(G)),
                                paste0("s", seq_len(S))))
    m
}

mini_sce <- function(...) {
    m <- mini_counts()
    cd <- S4Vectors::DataFrame(..., row.names = colnames(m))
    SingleCellExperiment::SingleCellExperiment(list(counts = m), colData = cd)
}

test_that("SCE coordinates are found where documented, in order", {
    # one rule: reducedDim "spatial", then x/y, then the Visium array; the
    # array indices always travel along (the backend's hexagonal images)
    s <- mini_sce(array_row = c(0, 0, 1, 1, 2, 2), array_col = c(0, 2, 1, 3, 0, 2),
                  x = 1:6, y = 6:1)
    cc <- sigel:::.coords_sce(s)
    expect_equal(colnames(cc$obs), c("x", "y", "array_row", "array_col"))
    expect_null(cc$obsm)
    expect_match(cc$where, "x")
    s2 <- mini_sce(array_row = c(0, 0, 1, 1, 2, 2), array_col = c(0, 2, 1, 3, 0, 2))
    cc <- sigel:::.coords_sce(s2)
    expect_equal(colnames(cc$obs), c("array_row", "array_col"))
    expect_match(cc$where, "array_row")
    SingleCellExperiment::reducedDim(s2, "spatial") <- cbind(u = 1:6 * 10, v = 1:6)
    cc <- sigel:::.coords_sce(s2)
    expect_equal(cc$obsm[, 1], 1:6 * 10)
    expect_equal(cc$obs$array_col, c(0, 2, 1, 3, 0, 2))
    expect_match(cc$where, "reducedDim")
    # an explicit `coords` wins and travels alone
    cc <- sigel:::.coords_sce(s, coords = c("x", "y"))
    expect_equal(colnames(cc$obs), c("x", "y"))

    s <- mini_sce(x = 1:6, y = 6:1)
    cc <- sigel:::.coords_sce(s)
    expect_equal(cc$obs$x, 1:6)
    expect_equal(cc$obs$y, 6:1)

    s <- mini_sce(a = 1:6)
    SingleCellExperiment::reducedDim(s, "spatial") <- cbind(u = 1:6 / 3, v = 6:1 / 3)
    cc <- sigel:::.coords_sce(s)
    expect_equal(dim(cc$obsm), c(6L, 2L))
    expect_equal(ncol(cc$obs), 0L)
    expect_match(cc$where, "reducedDim")
})

test_that("`coords` overrides: reducedDim name, colData columns, a table", {
    s <- mini_sce(px = (1:6) * 10, py = (6:1) * 10, x = 1:6, y = 1:6)
    SingleCellExperiment::reducedDim(s, "pixels") <- cbind(1:6 + 0.5, 1:6)
    cc <- sigel:::.coords_sce(s, coords = "pixels")
    expect_equal(cc$obsm[, 1], 1:6 + 0.5)
    cc <- sigel:::.coords_sce(s, coords = c("px", "py"))
    expect_equal(cc$obsm[, 2], (6:1) * 10)
    tab <- data.frame(x = 6:1, y = 1:6, row.names = rev(colnames(s)))
    cc <- sigel:::.coords_sce(s, coords = tab)   # reordered by rownames
    expect_equal(cc$obs$x, 1:6)
    expect_error(sigel:::.coords_sce(s, coords = "nope"), "not a reducedDim")
    expect_error(sigel:::.coords_sce(s, coords = c("px", "zz")),
                 "not in colData\\(x\\): zz")
    bad <- data.frame(x = 1:6, y = 1:6, row.names = paste0("z", 1:6))
    expect_error(sigel:::.coords_sce(s, coords = bad), "do not match the spot names")
})

test_that("no coordinates: the error says where it looked", {
    s <- mini_sce(a = 1:6)
    err <- tryCatch(sigel:::.coords_sce(s), error = conditionMessage)
    expect_match(err, "no spatial coordinates found")
    expect_match(err, "array_row/array_col")
    expect_match(err, "x/y")
    expect_match(err, "reducedDim\\(x, \"spatial\"\\)")
    expect_error(runSIGEL(s), "no spatial coordinates found")
    expect_error(runSIGEL(mini_counts()), "needs `coords`")
})

test_that("coordinates must be numeric, finite and one row per spot", {
    s <- mini_sce(x = c(1:5, NA), y = 1:6)
    expect_error(sigel:::.coords_sce(s), "NA or infinite")
    s <- mini_sce(a = 1:6)
    expect_error(runSIGEL(s, coords = matrix(1:10, 5, 2)), "5 rows but the counts have 6 spots")
    expect_error(runSIGEL(mini_counts(), coords = data.frame(x = 1:5, y = 1:5)),
                 "mismatched dimensions")
    expect_error(runSIGEL(s, coords = data.frame(x = letters[1:6], y = 1:6)),
                 "numeric")
})

test_that("counts: non-integer, negative, NA, duplicated or missing gene names", {
    m <- mini_counts()
    xy <- data.frame(x = 1:6, y = 1:6)
    m1 <- m; m1[1, 1] <- 0.5
    expect_error(runSIGEL(m1, coords = xy), "non-integer values")
    m2 <- m; m2[2, 2] <- -1
    expect_error(runSIGEL(m2, coords = xy), "negative values")
    m3 <- m; m3[1, 2] <- NA
    expect_error(runSIGEL(m3, coords = xy), "NA, NaN or infinite")
    m4 <- m; rownames(m4)[2] <- "g1"
    expect_error(runSIGEL(m4, coords = xy), "duplicated gene names.*g1")
    m5 <- m; rownames(m5) <- NULL
    expect_error(runSIGEL(m5, coords = xy), "no gene names")
    # sparse input is checked the same way
    sp <- methods::as(m1, "CsparseMatrix")
    expect_error(runSIGEL(sp, coords = xy), "non-integer values")
    # SCE: the assay must exist
    s <- mini_sce(x = 1:6, y = 1:6)
    expect_error(runSIGEL(s, assay = "logcounts"),
                 "assay \"logcounts\" not found.*counts")
    s2 <- s; rownames(s2)[3] <- "g1"
    expect_error(runSIGEL(s2), "duplicated gene names")
    # every bad input above is a classed condition, raised before Python is called
    for (bad in list(m1, m2, m3, m4, m5)) {
        expect_error(runSIGEL(bad, coords = xy), class = "sigel_input_error")
    }
    expect_error(runSIGEL(mini_counts()), class = "sigel_input_error")
    expect_error(runSIGEL(mini_sce(a = 1:6)), class = "sigel_input_error")
    expect_error(runSIGEL(s, assay = "logcounts"), class = "sigel_input_error")
})

test_that("library size, genes, hyper-parameters and unknown arguments", {
    s <- mini_sce(x = 1:6, y = 1:6, umi = 11:16)
    expect_error(runSIGEL(s, library_size = "sum_umi"), "not a column of colData")
    expect_error(runSIGEL(s, library_size = 1:3), "3 values but there are 6 spots")
    expect_error(runSIGEL(s, library_size = c(1:5, -1)), "finite and >= 0")
    expect_error(runSIGEL(s, genes = c("g1", "nope")), "not in the data: nope")
    expect_error(runSIGEL(s, embed_dim = 7.5), "`embed_dim` must be a whole number")
    expect_error(runSIGEL(s, refine = "yes"), "`refine` must be TRUE or FALSE")
    expect_error(runSIGEL(s, denoise = "yes"), "`denoise` must be TRUE, FALSE or \"split\"")
    expect_error(runSIGEL(s, embed_dim = NULL), "`embed_dim` must not be NULL")
    expect_error(runSIGEL(s, epoch = 3), "unknown argument\\(s\\).*epoch")
    expect_error(runSIGEL(s, device = "gpu"), "`device` must be")
    expect_error(runSIGEL(s, geometry = "hex"), "should be one of")
    expect_error(runSIGEL(list(1)), "does not support objects of class list")
    expect_error(runSIGEL(s, model_dir = tempdir()), "already exists")
})

test_that("Seurat: coordinates from meta.data, images or `coords`", {
    skip_if_not_installed("SeuratObject")
    m <- mini_counts()
    rownames(m)[1] <- "g_1"
    so <- suppressWarnings(SeuratObject::CreateSeuratObject(
        methods::as(m, "CsparseMatrix"), assay = "Spatial",
        meta.data = data.frame(x = 1:6, y = 6:1, row.names = colnames(m))))
    cc <- sigel:::.coords_seurat(so)
    expect_equal(cc$obs$y, 6:1)
    cc <- sigel:::.coords_seurat(so, coords = cbind(1:6, 1:6))
    expect_equal(dim(cc$obsm), c(6L, 2L))
    so2 <- so
    so2$x <- NULL
    err <- tryCatch(sigel:::.coords_seurat(so2), error = conditionMessage)
    expect_match(err, "no spatial coordinates found in the Seurat object")
    expect_match(err, "image")
    parts <- sigel:::.input_parts(so, assay = "counts")
    expect_equal(rownames(parts$counts)[1], "g-1")   # Seurat renamed it
    expect_error(runSIGEL(so, assay = "RNA"), "assay \"RNA\" not in the Seurat")
    m1 <- m; m1[1, 1] <- 1.5
    so3 <- suppressWarnings(SeuratObject::CreateSeuratObject(
        m1, meta.data = data.frame(x = 1:6, y = 6:1, row.names = colnames(m))))
    expect_error(runSIGEL(so3), "non-integer values")
})

test_that("Seurat Visium images give array row/col coordinates", {
    skip_if_not_installed("Seurat")
    vis <- sigel_fake_visium(mini_counts())
    cc <- sigel:::.coords_seurat(vis)
    expect_equal(colnames(cc$obs), c("array_row", "array_col"))
    expect_match(cc$where, "slice1")
    sub <- vis[, 1:3]
    expect_equal(nrow(sigel:::.coords_seurat(sub)$obs), 3L)
})

test_that("objects without spot names get made-up ones for the backend", {
    s <- mini_sce(x = 1:6, y = 1:6)
    colnames(s) <- NULL
    parts <- sigel:::.input_parts(s)
    expect_equal(colnames(parts$counts), paste0("spot", 1:6))
    expect_equal(parts$coords$obs$x, 1:6)
    lib <- sigel:::.input_parts(s, library_size = 11:16)$library_size
    expect_equal(lib, 11:16)
})

test_that("SpatialExperiment: spatialCoords() (skipped where not installed)", {
    skip_if_not_installed("SpatialExperiment")
    m <- mini_counts()
    spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = m),
        spatialCoords = cbind(pxl_col = (1:6) * 10.5, pxl_row = (6:1) * 3.5))
    cc <- sigel:::.coords_sce(spe)
    expect_match(cc$where, "spatialCoords")
    expect_equal(cc$obsm[, 1], (1:6) * 10.5)
    SummarizedExperiment::colData(spe)$array_row <- c(0, 0, 1, 1, 2, 2)
    SummarizedExperiment::colData(spe)$array_col <- c(0, 2, 1, 3, 0, 2)
    expect_equal(colnames(sigel:::.coords_sce(spe)$obs), c("array_row", "array_col"))
})
