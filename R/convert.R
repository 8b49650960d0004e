# Conversion between R and Python objects, kept apart from the analysis code.
#
# R -> Python: counts (genes x spots, dense or dgCMatrix) + coordinates +
#   gene names -> an AnnData (spots x genes, scipy CSR) with the coordinates
#   where `sigel.GeneImages.from_anndata()` looks for them.
# Python -> R: pandas DataFrame -> data.frame with rownames (`.py_df()`),
#   numpy array -> matrix (`.py_matrix()`), scipy sparse -> dgCMatrix built by
#   hand from indptr/indices/data/shape (`.py_sparse()`; reticulate 1.28
#   cannot convert scipy >= 1.11 sparse matrices).

# ---------------------------------------------------------------- helpers

# Call into Python; a Python exception becomes an R error carrying only the
# Python message (no traceback wall). `what` prefixes the message.
.py_call <- function(expr, what = NULL) {
    tryCatch(expr, error = function(e) {
        msg <- .py_error_message(e)
        if (!is.null(what)) msg <- paste0(what, ": ", msg)
        stop(msg, call. = FALSE)
    })
}

.py_error_message <- function(e) {
    err <- tryCatch(reticulate::py_last_error(), error = function(e2) NULL)
    cm <- conditionMessage(e)
    if (!is.null(err) && !is.null(err$value) && nzchar(err$value) &&
        grepl(err$value, cm, fixed = TRUE)) {
        return(err$value)
    }
    # reticulate formats "module.Class: message\n\nDetailed traceback: ..."
    cm <- sub("\n+Detailed traceback:.*$", "", cm)
    cm <- sub("^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Warning): ", "", cm)
    trimws(cm)
}

.py_str <- function(x) {
    as.character(reticulate::py_str(x))
}

# Python sequence / index -> character vector
.py_chr <- function(x) {
    out <- reticulate::py_to_r(
        reticulate::import_builtins(convert = FALSE)$list(
            reticulate::import("pandas", convert = FALSE)$Index(x)$
                astype("str")))
    as.character(unlist(out))
}

# ---------------------------------------------------------- Python -> R

#' @keywords internal
#' @noRd
.py_matrix <- function(arr, rownames = NULL, colnames = NULL) {
    np <- reticulate::import("numpy", convert = FALSE)
    a <- np$ascontiguousarray(np$asarray(arr, dtype = "float64"))
    m <- reticulate::py_to_r(a)
    if (is.null(dim(m))) m <- matrix(m, ncol = 1L)
    if (!is.null(rownames)) rownames(m) <- rownames
    if (!is.null(colnames)) colnames(m) <- colnames
    m
}

# pandas DataFrame (numeric) -> matrix with dimnames from index/columns
.py_df_matrix <- function(df) {
    .py_matrix(df$to_numpy(dtype = "float64"),
               rownames = .py_chr(df$index),
               colnames = .py_chr(df$columns))
}

#' pandas DataFrame -> data.frame with rownames from the index
#'
#' Columns are converted one at a time (numeric, logical, character,
#' categorical -> factor); the index becomes the rownames.
#' @keywords internal
#' @noRd
.py_df <- function(df) {
    if (is.data.frame(df)) return(df)
    pd <- reticulate::import("pandas", convert = FALSE)
    bi <- reticulate::import_builtins(convert = FALSE)
    if (!reticulate::py_to_r(bi$isinstance(df, pd$DataFrame))) {
        if (reticulate::py_to_r(bi$isinstance(df, pd$Series))) {
            df <- df$to_frame()
        } else {
            stop("expected a pandas DataFrame; got ", .py_str(bi$type(df)),
                 call. = FALSE)
        }
    }
    cols <- .py_chr(df$columns)
    n <- reticulate::py_to_r(bi$len(df))
    out <- vector("list", length(cols))
    names(out) <- cols
    for (j in seq_along(cols)) {
        s <- df$iloc$`__getitem__`(
            reticulate::tuple(bi$slice(NULL), as.integer(j - 1L)))
        out[[j]] <- .py_series(s, n)
    }
    res <- if (length(out)) {
        as.data.frame(out, stringsAsFactors = FALSE, check.names = FALSE,
                      optional = TRUE)
    } else {
        data.frame(row.names = seq_len(n))
    }
    if (!reticulate::py_to_r(bi$isinstance(df$index, pd$RangeIndex))) {
        idx <- .py_chr(df$index)
        if (length(idx) == nrow(res) && !anyDuplicated(idx)) {
            rownames(res) <- idx
        }
    }
    res
}

.py_series <- function(s, n) {
    dt <- .py_str(s$dtype)
    np <- reticulate::import("numpy", convert = FALSE)
    num <- function() {
        as.numeric(reticulate::py_to_r(
            s$to_numpy(dtype = "float64", na_value = np$nan)))
    }
    if (identical(dt, "category")) {
        lev <- .py_chr(s$cat$categories)
        codes <- as.integer(reticulate::py_to_r(
            s$cat$codes$to_numpy(dtype = "int64")))
        codes[codes < 0L] <- NA_integer_
        return(factor(lev[codes + 1L], levels = lev))
    }
    if (dt %in% c("bool", "boolean")) {
        v <- num()
        return(ifelse(is.na(v), NA, v > 0))
    }
    if (grepl("^(u?int|Int|UInt)[0-9]*$", dt)) {
        v <- num()
        if (all(is.na(v) | abs(v) < .Machine$integer.max)) v <- as.integer(v)
        return(v)
    }
    if (grepl("^(float|Float)", dt)) return(num())
    # strings / objects / anything else: as character, None/NaN -> NA
    na <- as.logical(reticulate::py_to_r(s$isna()$to_numpy()))
    v <- .py_chr(s$astype("str"))
    v[na] <- NA_character_
    v
}

#' scipy sparse matrix -> dgCMatrix, built from indptr/indices/data/shape
#' @keywords internal
#' @noRd
.py_sparse <- function(m, rownames = NULL, colnames = NULL) {
    np <- reticulate::import("numpy", convert = FALSE)
    sp <- reticulate::import("scipy.sparse", convert = FALSE)
    csc <- sp$csc_matrix(m)
    csc$sum_duplicates()
    csc$sort_indices()
    shape <- as.integer(unlist(reticulate::py_to_r(csc$shape)))
    p <- as.integer(reticulate::py_to_r(csc$indptr$astype("int32")))
    i <- as.integer(reticulate::py_to_r(csc$indices$astype("int32")))
    x <- as.numeric(reticulate::py_to_r(csc$data$astype("float64")))
    out <- methods::new("dgCMatrix", i = i, p = p, x = x, Dim = shape)
    dimnames(out) <- list(rownames, colnames)
    out
}

# ---------------------------------------------------------- R -> Python

# genes x spots (dense or sparse) -> dgCMatrix with dimnames
.as_dgc <- function(counts, what = "counts") {
    if (methods::is(counts, "dgCMatrix")) return(counts)
    if ((is.matrix(counts) && !is.numeric(counts) && !is.logical(counts)) ||
        (is.data.frame(counts) &&
         !all(vapply(counts, function(v) is.numeric(v) || is.logical(v),
                     logical(1))))) {
        bad <- if (is.data.frame(counts)) {
            cl <- vapply(counts, function(v) class(v)[1], character(1))
            paste0("a data.frame with ", .fmt_names(unique(cl)), " columns")
        } else {
            paste0("a ", typeof(counts), " matrix")
        }
        .sigel_stop("`", what, "` must be a numeric count matrix (genes x ",
                    "spots); got ", bad, " (e.g. ",
                    .fmt_value(as.vector(as.matrix(counts)[1L, ]), 3L), ")")
    }
    if (methods::is(counts, "DelayedArray") || methods::is(counts, "Matrix") ||
        is.matrix(counts) || is.data.frame(counts)) {
        dn <- dimnames(counts)
        if (is.data.frame(counts)) counts <- as.matrix(counts)
        m <- methods::as(methods::as(as.matrix(counts) * 1, "CsparseMatrix"),
                         "generalMatrix")
        m <- methods::as(m, "dgCMatrix")
        dimnames(m) <- dn
        return(m)
    }
    .sigel_stop("`", what, "` must be a matrix or a sparse Matrix (genes x ",
                "spots); got an object of class ", class(counts)[1])
}

#' Build a Python AnnData (spots x genes, scipy CSR) from plain R parts
#'
#' @param counts genes x spots matrix / dgCMatrix with dimnames.
#' @param coords list from `.coords_*()`: `obs` (data.frame of obs
#'   coordinate columns, may have 0 columns) and `obsm` (matrix or NULL).
#' @param library_size numeric (length = spots) or NULL.
#' @param obs extra data.frame of spot annotations (optional).
#' @return a Python `anndata.AnnData` (convert = FALSE).
#' @keywords internal
#' @noRd
.anndata_from_parts <- function(counts, coords = NULL, library_size = NULL,
                                obs = NULL, spatial_key = "spatial") {
    counts <- .as_dgc(counts)
    ad <- reticulate::import("anndata", convert = FALSE)
    pd <- reticulate::import("pandas", convert = FALSE)
    np <- reticulate::import("numpy", convert = FALSE)
    genes <- rownames(counts)
    spots <- colnames(counts)
    if (is.null(spots)) spots <- as.character(seq_len(ncol(counts)))
    # dgCMatrix (genes x spots) is CSC; its transpose in scipy is CSR
    # spots x genes without copying the arrays twice.
    X <- reticulate::r_to_py(counts)$T$tocsr()
    X <- X$astype("float32")
    odf <- data.frame(row.names = spots)
    if (!is.null(coords$obs) && ncol(coords$obs)) {
        for (nm in colnames(coords$obs)) odf[[nm]] <- as.numeric(coords$obs[[nm]])
    }
    if (!is.null(library_size)) odf[["sigel_library_size"]] <-
        as.numeric(library_size)
    if (!is.null(obs) && ncol(obs)) {
        for (nm in setdiff(colnames(obs), colnames(odf))) odf[[nm]] <- obs[[nm]]
    }
    pobs <- .r_df_to_py(odf, spots)
    pvar <- pd$DataFrame(index = pd$Index(as.list(genes), dtype = "str"))
    a <- ad$AnnData(X = X, obs = pobs, var = pvar)
    if (!is.null(coords$obsm)) {
        cm <- coords$obsm
        storage.mode(cm) <- "double"
        a$obsm$`__setitem__`(spatial_key,
                             np$ascontiguousarray(reticulate::r_to_py(unname(cm))))
    }
    a
}

# data.frame -> pandas with a string index (column by column)
.r_df_to_py <- function(df, index) {
    pd <- reticulate::import("pandas", convert = FALSE)
    cols <- list()
    for (nm in colnames(df)) {
        v <- df[[nm]]
        if (is.factor(v)) {
            v <- pd$Categorical(as.list(as.character(v)),
                                categories = as.list(levels(v)))
        } else if (is.character(v)) {
            v <- as.list(v)
        }
        cols[[nm]] <- v
    }
    idx <- pd$Index(as.list(as.character(index)), dtype = "str")
    if (!length(cols)) return(pd$DataFrame(index = idx))
    pd$DataFrame(reticulate::dict(cols), index = idx)
}

#' Convert an R object to a Python AnnData
#'
#' `SingleCellExperiment` / `SpatialExperiment`, `Seurat` or a count matrix
#' (genes x spots, with `coords`) becomes an AnnData (spots x genes, scipy
#' CSR counts in `X`) with the coordinates where the backend looks for them
#' (`obs` `array_row`/`array_col`, `obs` `x`/`y`, or `obsm['spatial']`).
#' Used by the task wrappers; not exported.
#' @param x the R object.
#' @param assay assay (SCE) or slot (Seurat) holding counts.
#' @param coords,library_size see [runSIGEL()].
#' @param check check the counts (integers, names) first.
#' @param ... passed to the coordinate extraction (e.g. `image` for Seurat).
#' @keywords internal
#' @noRd
.as_anndata <- function(x, assay = "counts", coords = NULL,
                        library_size = NULL, check = TRUE, ...) {
    parts <- .input_parts(x, assay = assay, coords = coords,
                          library_size = library_size, ...)
    if (check) .check_counts(parts$counts)
    .sigel_py()
    .py_call(.anndata_from_parts(parts$counts, parts$coords,
                                 parts$library_size, obs = parts$obs,
                                 spatial_key = "spatial"))
}
