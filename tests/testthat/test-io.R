# Files R users start from: .h5ad round trip and a Space Ranger outs/ folder,
# both written by the tests themselves.

io_sce <- function() {
    set.seed(11)
    G <- 30
    S <- 24
    m <- Matrix::rsparsematrix(G, S, density = 0.3,
                               rand.x = function(n) rpois(n, 4) + 1)
    dimnames(m) <- list(paste0("gene-", seq_len(G)), paste0("AC", seq_len(S)))
    cd <- S4Vectors::DataFrame(
        array_row = rep(0:3, each = 6),
        array_col = 2 * rep(0:5, 4) + rep(0:3, each = 6) %% 2,
        layer = factor(rep(c("a", "b", "c"), 8), levels = c("c", "b", "a")),
        label = rep(c("u", "v"), 12), flag = rep(c(TRUE, FALSE), 12),
        row.names = colnames(m))
    rd <- S4Vectors::DataFrame(symbol = paste0("SYM", seq_len(G)),
                               row.names = rownames(m))
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = m), colData = cd, rowData = rd)
    xy <- cbind(x = cd$array_col * 50 + 0.5, y = cd$array_row * 86.6)
    rownames(xy) <- colnames(m)
    SingleCellExperiment::reducedDim(sce, "spatial") <- xy
    sce
}

test_that("writeSigelH5AD / readSigelH5AD round trip", {
    skip_if_no_sigel_python()
    sce <- io_sce()
    f <- tempfile(fileext = ".h5ad")
    expect_identical(writeSigelH5AD(sce, f), f)
    expect_error(writeSigelH5AD(sce, f), "already exists")
    back <- readSigelH5AD(f)
    expect_s4_class(back, "SingleCellExperiment")
    cnt <- SummarizedExperiment::assay(back, "counts")
    expect_s4_class(cnt, "dgCMatrix")
    expect_identical(cnt, SummarizedExperiment::assay(sce, "counts"))
    expect_identical(rownames(back), rownames(sce))
    expect_identical(colnames(back), colnames(sce))
    xy <- SingleCellExperiment::reducedDim(back, "spatial")
    expect_equal(unname(xy), unname(SingleCellExperiment::reducedDim(sce, "spatial")))
    expect_identical(colnames(xy), c("x", "y"))
    cd <- SummarizedExperiment::colData(back)
    expect_equal(cd$array_row, sce$array_row)
    expect_identical(cd$layer, sce$layer)
    expect_identical(cd$label, sce$label)
    expect_identical(cd$flag, sce$flag)
    expect_identical(SummarizedExperiment::rowData(back)$symbol,
                     SummarizedExperiment::rowData(sce)$symbol)
    # the same coordinates are found on both objects
    expect_equal(sigel:::.coords_sce(back), sigel:::.coords_sce(sce),
                 ignore_attr = TRUE)
    # a second assay becomes a layer and comes back
    SummarizedExperiment::assay(sce, "logcounts") <-
        log1p(SummarizedExperiment::assay(sce, "counts"))
    writeSigelH5AD(sce, f, overwrite = TRUE)
    back2 <- readSigelH5AD(f)
    expect_equal(SummarizedExperiment::assay(back2, "logcounts"),
                 SummarizedExperiment::assay(sce, "logcounts"))
    # bad input: named R errors
    expect_error(readSigelH5AD(file.path(tempdir(), "none.h5ad")),
                 "`file` does not exist")
    expect_error(writeSigelH5AD(sce, f, assay = "nope"),
                 "`assay` must be one of")
    expect_error(writeSigelH5AD(SummarizedExperiment::assay(sce), f),
                 "`x` must be a SingleCellExperiment")
    bad <- tempfile(fileext = ".h5ad")
    writeLines("not hdf5", bad)
    expect_error(readSigelH5AD(bad), "could not read")
})

# write a Space Ranger outs/ folder: matrix as .mtx or 10x .h5, positions
write_outs <- function(sce, h5 = FALSE, old_positions = FALSE) {
    outs <- tempfile("outs")
    dir.create(file.path(outs, "spatial"), recursive = TRUE)
    m <- SummarizedExperiment::assay(sce, "counts")
    ids <- paste0("ENSG", sprintf("%05d", seq_len(nrow(m))))
    if (!h5) {
        d <- file.path(outs, "filtered_feature_bc_matrix")
        dir.create(d)
        tmp <- tempfile(fileext = ".mtx")
        Matrix::writeMM(methods::as(m, "CsparseMatrix"), tmp)
        con <- gzfile(file.path(d, "matrix.mtx.gz"), "w")
        writeLines(readLines(tmp), con)
        close(con)
        utils::write.table(
            data.frame(ids, rownames(m), "Gene Expression"),
            gzfile(file.path(d, "features.tsv.gz")), sep = "\t",
            quote = FALSE, row.names = FALSE, col.names = FALSE)
        utils::write.table(
            data.frame(colnames(m)), gzfile(file.path(d, "barcodes.tsv.gz")),
            quote = FALSE, row.names = FALSE, col.names = FALSE)
    } else {
        reticulate::py_run_string(paste(
            "import h5py, numpy as np",
            "def _w(path, data, indices, indptr, shape, bc, ids, names):",
            "    with h5py.File(path, 'w') as f:",
            "        g = f.create_group('matrix')",
            "        g['barcodes'] = np.array(bc, dtype='S')",
            "        g['data'] = np.asarray(data, dtype=np.int32)",
            "        g['indices'] = np.asarray(indices, dtype=np.int64)",
            "        g['indptr'] = np.asarray(indptr, dtype=np.int64)",
            "        g['shape'] = np.asarray(shape, dtype=np.int32)",
            "        ft = g.create_group('features')",
            "        ft['id'] = np.array(ids, dtype='S')",
            "        ft['name'] = np.array(names, dtype='S')",
            "        ft['feature_type'] = np.array(['Gene Expression'] * len(ids), dtype='S')",
            "        ft['genome'] = np.array(['GRCh38'] * len(ids), dtype='S')",
            "        ft['_all_tag_keys'] = np.array(['genome'], dtype='S')",
            sep = "\n"))
        main <- reticulate::import_main(convert = FALSE)
        main$`_w`(file.path(outs, "filtered_feature_bc_matrix.h5"),
                  as.integer(m@x), m@i, m@p, dim(m), as.list(colnames(m)),
                  as.list(ids), as.list(rownames(m)))
    }
    pos <- data.frame(barcode = colnames(m), in_tissue = 1L,
                      array_row = sce$array_row, array_col = sce$array_col,
                      pxl_row_in_fullres = sce$array_row * 100L,
                      pxl_col_in_fullres = sce$array_col * 60L)
    # an off-tissue spot that the filtered matrix does not hold
    pos <- rbind(pos, data.frame(barcode = "OFF-1", in_tissue = 0L,
                                 array_row = 9L, array_col = 9L,
                                 pxl_row_in_fullres = 900L,
                                 pxl_col_in_fullres = 540L))
    if (old_positions) {
        utils::write.table(pos, file.path(outs, "spatial",
                                          "tissue_positions_list.csv"),
                           sep = ",", row.names = FALSE, col.names = FALSE)
    } else {
        utils::write.csv(pos, file.path(outs, "spatial",
                                        "tissue_positions.csv"),
                         row.names = FALSE)
    }
    list(outs = outs, ids = ids)
}

test_that("readSpaceRanger reads mtx or .h5 counts with tissue positions", {
    skip_if_no_sigel_python()
    sce <- io_sce()
    m <- SummarizedExperiment::assay(sce, "counts")
    for (h5 in c(FALSE, TRUE)) {
        w <- write_outs(sce, h5 = h5, old_positions = h5)
        vis <- readSpaceRanger(w$outs)
        expect_s4_class(vis, "SingleCellExperiment")
        expect_identical(rownames(vis), rownames(m))
        expect_identical(colnames(vis), colnames(m))
        expect_equal(as.matrix(SummarizedExperiment::assay(vis, "counts")),
                     as.matrix(m), info = paste("h5 =", h5))
        expect_s4_class(SummarizedExperiment::assay(vis, "counts"),
                        "dgCMatrix")
        expect_identical(SummarizedExperiment::rowData(vis)$gene_ids, w$ids)
        expect_equal(vis$array_row, sce$array_row)
        expect_equal(vis$array_col, sce$array_col)
        xy <- SingleCellExperiment::reducedDim(vis, "spatial")
        expect_equal(unname(xy[, 1]), sce$array_col * 60)
        expect_equal(unname(xy[, 2]), sce$array_row * 100)
        # runSIGEL's lookup: pixels as coordinates, array indices along
        cc <- sigel:::.coords_sce(vis)
        expect_equal(cc$obs$array_row, sce$array_row)
    }
    skip_if_not_installed("SeuratObject")
    so <- readSpaceRanger(w$outs, as = "Seurat")
    expect_s4_class(so, "Seurat")
    expect_equal(so$array_row, stats::setNames(sce$array_row, colnames(m)))
    expect_error(readSpaceRanger(file.path(tempdir(), "no-outs")),
                 "`outs` must be a Space Ranger outs/ folder")
    empty <- tempfile("outs")
    dir.create(empty)
    expect_error(readSpaceRanger(empty), "filtered_feature_bc_matrix")
})
