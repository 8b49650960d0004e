# Reading and writing the files R users start from: AnnData (.h5ad) and a
# Space Ranger outs/ folder. The backend (python/sigel/io/r.py) reads the
# files; matrices cross into R as CSC arrays (never through reticulate's
# scipy conversion), data frames column by column.

.io_mod <- function() {
    .sigel_py()
    reticulate::import("sigel.io.r", convert = FALSE)
}

# a Python matrix (AnnData X or a layer, spots x genes) -> genes x spots
# dgCMatrix (sparse) or matrix (dense)
.py_matrix_t <- function(m, genes, spots) {
    parts <- .io_mod()$csc_parts(m, transpose = TRUE)
    get <- function(k) reticulate::py_to_r(parts$`__getitem__`(k))
    shape <- as.integer(unlist(get("shape")))
    if (isTRUE(get("dense"))) {
        out <- matrix(as.numeric(get("data")), shape[1], shape[2])
    } else {
        out <- methods::new("dgCMatrix",
                            i = as.integer(get("indices")),
                            p = as.integer(get("indptr")),
                            x = as.numeric(get("data")), Dim = shape)
    }
    dimnames(out) <- list(genes, spots)
    out
}

# AnnData (Python) -> SingleCellExperiment
.anndata_to_sce <- function(ad, X_name = "counts") {
    bi <- reticulate::import_builtins(convert = FALSE)
    spots <- .py_chr(ad$obs_names)
    genes <- .py_chr(ad$var_names)
    assays <- list()
    X <- ad$X
    if (!inherits(X, "python.builtin.NoneType")) {
        assays[[X_name]] <- .py_matrix_t(X, genes, spots)
    }
    for (ln in .py_chr(bi$list(ad$layers$keys()))) {
        if (ln %in% names(assays)) {
            warning("layer \"", ln, "\" skipped: an assay of that name ",
                    "exists (X_name)", call. = FALSE)
            next
        }
        assays[[ln]] <- .safe(
            .py_matrix_t(ad$layers$`__getitem__`(ln), genes, spots),
            paste0("layer \"", ln, "\""))
    }
    assays <- assays[!vapply(assays, is.null, logical(1))]
    cd <- .py_df(ad$obs)
    rownames(cd) <- spots
    rd <- .py_df(ad$var)
    rownames(rd) <- genes
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = assays,
        colData = S4Vectors::DataFrame(cd, check.names = FALSE),
        rowData = S4Vectors::DataFrame(rd, check.names = FALSE))
    for (k in .py_chr(bi$list(ad$obsm$keys()))) {
        m <- .safe(.py_matrix(ad$obsm$`__getitem__`(k)),
                   paste0("obsm['", k, "']"))
        if (is.null(m) || nrow(m) != length(spots)) next
        rownames(m) <- spots
        if (identical(k, "spatial") && ncol(m) >= 2L) {
            colnames(m) <- c("x", "y", if (ncol(m) > 2L)
                paste0("coord", seq_len(ncol(m) - 2L) + 2L))
        }
        SingleCellExperiment::reducedDim(sce, k) <- m
    }
    sce
}

#' Read an AnnData (.h5ad) file into a SingleCellExperiment
#'
#' Reads the file with the Python backend (anndata) and converts it: `X`
#' becomes the assay `X_name` (a sparse `dgCMatrix` when `X` is sparse),
#' every layer an assay of its name, `obs` the `colData`, `var` the
#' `rowData`, and every `obsm` matrix a `reducedDim` of the same name. The
#' spot coordinates of `obsm['spatial']` become `reducedDim(x, "spatial")`
#' with columns `x` and `y` (the first and second coordinate, as scanpy and
#' squidpy store them), where [runSIGEL()] finds them. `uns`, `obsp` and
#' `varm` are not converted. In the spirit of zellkonverter's `readH5AD()`,
#' without basilisk.
#'
#' @param file `character(1)`: the `.h5ad` file.
#' @param X_name `character(1)`: the assay name for `X` (default
#'   `"counts"`, as sigel expects raw counts there).
#' @return A `SingleCellExperiment` (genes x spots).
#' @seealso [writeSigelH5AD()], [readSpaceRanger()], [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     f <- tempfile(fileext = ".h5ad")
#'     writeSigelH5AD(sigelExampleData(), f)
#'     sce <- readSigelH5AD(f)
#'     sce
#' }
#' }
#' @export
readSigelH5AD <- function(file, X_name = "counts") {
    file <- .check_string(file, "file")
    X_name <- .check_string(X_name, "X_name")
    if (!file.exists(file)) {
        .sigel_stop("`file` does not exist; got ", .fmt_value(file))
    }
    ad <- .py_call(.io_mod()$read_h5ad(path.expand(file)), "readSigelH5AD")
    .anndata_to_sce(ad, X_name = X_name)
}

#' Write a SingleCellExperiment to an AnnData (.h5ad) file
#'
#' The assay `assay` becomes `X` (spots x genes; sparse CSR when the assay is
#' sparse, values kept as doubles), the other assays `layers`, `colData`
#' `obs` and `rowData` `var` (atomic columns; factors become categoricals),
#' every `reducedDim` an `obsm` entry, and the spot coordinates (found as
#' [runSIGEL()] finds them) `obsm['spatial']`, as scanpy and squidpy expect.
#'
#' @param x a `SingleCellExperiment` (or `SpatialExperiment`).
#' @param file `character(1)`: the `.h5ad` file to write.
#' @param assay `character(1)`: the assay written as `X`.
#' @param coords `NULL` (found as in [runSIGEL()]) or as there; written to
#'   `obsm['spatial']`. Objects without coordinates are written without.
#' @param overwrite `logical(1)`: replace an existing file.
#' @return `file`, invisibly.
#' @seealso [readSigelH5AD()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     f <- tempfile(fileext = ".h5ad")
#'     writeSigelH5AD(sigelExampleData(), f)
#'     file.exists(f)
#' }
#' }
#' @export
writeSigelH5AD <- function(x, file, assay = "counts", coords = NULL,
                           overwrite = FALSE) {
    if (!methods::is(x, "SingleCellExperiment")) {
        .sigel_stop("`x` must be a SingleCellExperiment; got an object of ",
                    "class ", class(x)[1])
    }
    file <- .check_string(file, "file")
    assay <- .check_string(assay, "assay")
    overwrite <- .check_flag(overwrite, "overwrite")
    an <- SummarizedExperiment::assayNames(x)
    if (!assay %in% an) {
        .sigel_stop("`assay` must be one of assayNames(x) (",
                    .fmt_names(an), "); got ", .fmt_value(assay))
    }
    if (file.exists(file) && !overwrite) {
        .sigel_stop("`file` already exists; got ", .fmt_value(file),
                    " (use overwrite = TRUE)")
    }
    ad <- .sce_to_anndata(x, assay, coords)
    .py_call(.io_mod()$write_h5ad(ad, path.expand(file),
                                  overwrite = isTRUE(overwrite)),
             "writeSigelH5AD")
    invisible(file)
}

# genes x spots matrix -> Python spots x genes (scipy CSR, or ndarray)
.r_matrix_to_py_t <- function(m) {
    np <- reticulate::import("numpy", convert = FALSE)
    if (methods::is(m, "sparseMatrix") || methods::is(m, "DelayedArray")) {
        m <- methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix")
        m <- methods::as(m, "dMatrix")
        m <- methods::as(m, "dgCMatrix")
        m@Dimnames <- list(NULL, NULL)
        return(reticulate::r_to_py(m)$T$tocsr())
    }
    m <- as.matrix(m)
    storage.mode(m) <- "double"
    np$ascontiguousarray(reticulate::r_to_py(unname(t(m))))
}

.sce_to_anndata <- function(x, assay, coords = NULL) {
    ad <- reticulate::import("anndata", convert = FALSE)
    pd <- reticulate::import("pandas", convert = FALSE)
    np <- reticulate::import("numpy", convert = FALSE)
    spots <- .spot_names(x)
    genes <- rownames(x)
    if (is.null(genes)) genes <- paste0("gene", seq_len(nrow(x)))
    X <- .r_matrix_to_py_t(SummarizedExperiment::assay(x, assay))
    keep_atomic <- function(df) {
        df <- as.data.frame(df, optional = TRUE)
        ok <- vapply(df, function(v) is.atomic(v) && is.null(dim(v)),
                     logical(1))
        df[, ok, drop = FALSE]
    }
    obs <- .r_df_to_py(keep_atomic(SummarizedExperiment::colData(x)), spots)
    var <- .r_df_to_py(keep_atomic(SummarizedExperiment::rowData(x)), genes)
    a <- ad$AnnData(X = X, obs = obs, var = var)
    for (nm in setdiff(SummarizedExperiment::assayNames(x), assay)) {
        if (!nzchar(nm)) next
        a$layers$`__setitem__`(nm, .r_matrix_to_py_t(
            SummarizedExperiment::assay(x, nm)))
    }
    for (nm in SingleCellExperiment::reducedDimNames(x)) {
        m <- as.matrix(SingleCellExperiment::reducedDim(x, nm))
        if (!is.numeric(m)) next
        storage.mode(m) <- "double"
        a$obsm$`__setitem__`(nm, np$ascontiguousarray(
            reticulate::r_to_py(unname(m))))
    }
    cc <- tryCatch(.coords_sce(x, coords), error = function(e) {
        if (!is.null(coords)) stop(e)
        NULL
    })
    if (!is.null(cc)) {
        xy <- .parts_xy(list(coords = cc))
        storage.mode(xy) <- "double"
        a$obsm$`__setitem__`("spatial", np$ascontiguousarray(
            reticulate::r_to_py(unname(xy))))
    }
    a
}

#' Read a Space Ranger (10x Visium) outs/ folder
#'
#' Reads the counts of a Space Ranger `outs/` folder, from
#' `filtered_feature_bc_matrix.h5` or the `filtered_feature_bc_matrix/`
#' folder (`matrix.mtx.gz`, `features.tsv.gz`, `barcodes.tsv.gz`), and the
#' spot positions from `spatial/tissue_positions.csv` (Space Ranger 2.0 and
#' later) or `spatial/tissue_positions_list.csv`, through the Python backend
#' (scanpy's 10x readers). Only gene expression features are kept; gene
#' symbols (made unique) are the row names, Ensembl ids are in
#' `rowData(x)$gene_ids`. The images are not read: sigel builds its gene
#' images from the array coordinates.
#'
#' @param outs `character(1)`: the `outs/` folder.
#' @param matrix `"filtered"` (spots under tissue) or `"raw"`.
#' @param as `"SingleCellExperiment"` or `"Seurat"` (needs SeuratObject).
#' @return A `SingleCellExperiment` with the `counts` assay (`dgCMatrix`),
#'   `colData` columns `in_tissue`, `array_row`, `array_col`,
#'   `pxl_row_in_fullres`, `pxl_col_in_fullres`, and
#'   `reducedDim(x, "spatial")` (full-resolution pixels, columns `x` =
#'   `pxl_col`, `y` = `pxl_row`); or a `Seurat` object (assay `"Spatial"`)
#'   with the same columns in its meta data. [runSIGEL()] uses the Visium
#'   array coordinates `array_row` / `array_col` of either.
#' @seealso [readSigelH5AD()], [runSIGEL()]
#' @examples
#' \dontrun{
#' sce <- readSpaceRanger("path/to/151673/outs")
#' }
#' @export
readSpaceRanger <- function(outs, matrix = c("filtered", "raw"),
                            as = c("SingleCellExperiment", "Seurat")) {
    outs <- .check_string(outs, "outs")
    matrix <- match.arg(matrix)
    as <- match.arg(as)
    if (!dir.exists(outs)) {
        .sigel_stop("`outs` must be a Space Ranger outs/ folder; got ",
                    .fmt_value(outs), " (no such folder)")
    }
    ad <- .py_call(.io_mod()$read_spaceranger(path.expand(outs),
                                               matrix = matrix),
                   "readSpaceRanger")
    sce <- .anndata_to_sce(ad, X_name = "counts")
    if (as == "SingleCellExperiment") return(sce)
    .require_seurat()
    md <- as.data.frame(SummarizedExperiment::colData(sce))
    so <- SeuratObject::CreateSeuratObject(
        SummarizedExperiment::assay(sce, "counts"), assay = "Spatial",
        meta.data = md)
    so
}
