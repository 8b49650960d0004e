# Input extraction and validation: from SingleCellExperiment /
# SpatialExperiment / Seurat / matrix to plain parts (counts genes x spots,
# coordinates, library size), checked in R before Python is called.

# ------------------------------------------------------------ validation

#' @keywords internal
#' @noRd
.check_counts <- function(counts, what = "counts") {
    if (is.null(dim(counts)) || length(dim(counts)) != 2L) {
        .sigel_stop("`", what, "` must be a 2-d matrix (genes x spots)")
    }
    if (nrow(counts) < 1L || ncol(counts) < 2L) {
        .sigel_stop("`", what, "` must have at least 1 gene and 2 spots; got ",
             nrow(counts), " x ", ncol(counts))
    }
    genes <- rownames(counts)
    if (is.null(genes)) {
        .sigel_stop("`", what, "` has no gene names: set rownames (genes x spots)")
    }
    if (anyNA(genes) || any(!nzchar(genes))) {
        .sigel_stop("`", what, "` has missing or empty gene names (rownames)")
    }
    if (anyDuplicated(genes)) {
        dup <- unique(genes[duplicated(genes)])
        .sigel_stop("duplicated gene names in `", what, "`: ",
             paste(utils::head(dup, 10), collapse = ", "),
             if (length(dup) > 10) " ..." else "", " (", length(dup),
             " names); make them unique, e.g. with make.unique() or ",
             "scuttle::uniquifyFeatureNames()")
    }
    spots <- colnames(counts)
    if (!is.null(spots) && anyDuplicated(spots)) {
        dup <- unique(spots[duplicated(spots)])
        .sigel_stop("duplicated spot names (colnames) in `", what, "`: ",
             paste(utils::head(dup, 5), collapse = ", "))
    }
    v <- if (methods::is(counts, "dsparseMatrix")) counts@x else
        if (methods::is(counts, "Matrix")) as.vector(as.matrix(counts)) else
            as.vector(counts)
    if (!is.numeric(v) && !is.logical(v)) {
        .sigel_stop("`", what, "` must be numeric; got ", typeof(v))
    }
    if (anyNA(v) || any(!is.finite(v))) {
        .sigel_stop("`", what, "` contains NA, NaN or infinite values (",
             sum(!is.finite(v)), " entries)")
    }
    if (length(v) && min(v) < 0) {
        .sigel_stop("`", what, "` contains negative values (min ", format(min(v)),
             "); sigel needs raw counts (non-negative integers)")
    }
    if (length(v) && any(abs(v - round(v)) > 1e-8)) {
        bad <- v[abs(v - round(v)) > 1e-8][1]
        .sigel_stop("`", what, "` contains non-integer values (e.g. ", format(bad),
             "); sigel needs raw counts: pass the counts assay/slot, not ",
             "normalised or log-transformed values")
    }
    invisible(TRUE)
}

.check_coords_matrix <- function(m, n, spots, where) {
    if (!is.numeric(m)) {
        .sigel_stop("spatial coordinates from ", where, " must be numeric")
    }
    if (ncol(m) < 2L) {
        .sigel_stop("spatial coordinates from ", where, " need 2 columns; got ",
             ncol(m))
    }
    if (nrow(m) != n) {
        .sigel_stop("spatial coordinates from ", where, " have ", nrow(m),
             " rows but the counts have ", n, " spots")
    }
    if (anyNA(m[, 1:2]) || any(!is.finite(m[, 1:2]))) {
        .sigel_stop("spatial coordinates from ", where, " contain NA or infinite ",
             "values")
    }
    invisible(TRUE)
}

# Coordinates as a data.frame / matrix (n_spots x 2) -> list(obs, obsm, where)
# Columns named array_row/array_col (Visium) or x/y (grids) go to `obs`,
# anything else to `obsm['spatial']` (column 1 = x = image column).
.coords_from_table <- function(tab, spots, where) {
    if (is.data.frame(tab) || methods::is(tab, "DataFrame")) {
        tab <- as.data.frame(tab)
    }
    if (!is.data.frame(tab) && !is.matrix(tab)) {
        .sigel_stop("`coords` must be a data.frame or matrix (one row per spot), ",
             "a reducedDim name or 2 column names; got ", class(tab)[1])
    }
    n <- length(spots)
    rn <- rownames(tab)
    if (!is.null(rn) && !is.null(spots) && nrow(tab) == n &&
        !identical(rn, as.character(seq_len(n))) && !identical(rn, spots)) {
        if (setequal(rn, spots)) {
            tab <- tab[spots, , drop = FALSE]
        } else {
            miss <- setdiff(spots, rn)
            .sigel_stop("spatial coordinates from ", where, ": rownames do not ",
                 "match the spot names (", length(miss), " spots without ",
                 "coordinates, e.g. ", paste(utils::head(miss, 3),
                                             collapse = ", "), ")")
        }
    }
    cn <- colnames(tab)
    num <- if (is.data.frame(tab)) {
        vapply(tab, is.numeric, logical(1))
    } else rep(is.numeric(tab), ncol(tab))
    if (!is.null(cn) && all(c("array_row", "array_col") %in% cn)) {
        m <- as.matrix(as.data.frame(tab)[, c("array_row", "array_col")])
        .check_coords_matrix(m, n, spots, where)
        return(list(obs = data.frame(array_row = m[, 1], array_col = m[, 2]),
                    obsm = NULL, where = where))
    }
    if (!is.null(cn) && all(c("x", "y") %in% cn)) {
        m <- as.matrix(as.data.frame(tab)[, c("x", "y")])
        .check_coords_matrix(m, n, spots, where)
        return(list(obs = data.frame(x = m[, 1], y = m[, 2]), obsm = NULL,
                    where = where))
    }
    if (sum(num) < 2L) {
        .sigel_stop("spatial coordinates from ", where, " need 2 numeric columns")
    }
    m <- as.matrix(as.data.frame(tab)[, which(num)[1:2], drop = FALSE])
    .check_coords_matrix(m, n, spots, where)
    list(obs = data.frame(row.names = seq_len(n))[, 0, drop = FALSE],
         obsm = unname(m), where = where)
}

# Look for coordinates among colData-like columns, reducedDims, spatialCoords.
# `coords` (user): NULL, a table, a reducedDim name or 2 colData column names.
.coords_sce <- function(x, coords = NULL) {
    spots <- .spot_names(x)
    cd <- SummarizedExperiment::colData(x)
    rdn <- SingleCellExperiment::reducedDimNames(x)
    if (!is.null(coords)) {
        if (is.character(coords)) {
            if (length(coords) == 1L) {
                if (!coords %in% rdn) {
                    .sigel_stop("`coords = \"", coords, "\"` is not a reducedDim ",
                         "of x; reducedDimNames: ",
                         .fmt_names(rdn))
                }
                return(.coords_from_table(
                    SingleCellExperiment::reducedDim(x, coords), spots,
                    paste0("reducedDim(x, \"", coords, "\")")))
            }
            if (length(coords) == 2L) {
                miss <- setdiff(coords, colnames(cd))
                if (length(miss)) {
                    .sigel_stop("`coords` columns not in colData(x): ",
                         paste(miss, collapse = ", "), "; available: ",
                         .fmt_names(colnames(cd)))
                }
                tab <- as.data.frame(cd[, coords, drop = FALSE])
                if (!all(coords %in% c("array_row", "array_col", "x", "y")))
                    tab <- as.matrix(tab)
                return(.coords_from_table(
                    tab, spots, paste0("colData(x)[, c(\"", coords[1],
                                       "\", \"", coords[2], "\")]")))
            }
            .sigel_stop("`coords` as character must be a reducedDim name or 2 ",
                 "colData column names")
        }
        return(.coords_from_table(coords, spots, "`coords`"))
    }
    cc <- .coords_sce_default(x, cd, rdn, spots)
    if (is.null(cc)) .no_coords_sce(x)
    .with_array(cc, cd)
}

# The one lookup rule (as in Python): spatialCoords(x) / reducedDim(x,
# "spatial"), else colData x/y, else the Visium array row/column.
.coords_sce_default <- function(x, cd, rdn, spots) {
    if (methods::is(x, "SpatialExperiment")) {
        sc <- SpatialExperiment::spatialCoords(x)
        if (!is.null(sc) && ncol(sc) >= 2L) {
            return(.coords_from_table(as.matrix(sc), spots,
                                      "spatialCoords(x)"))
        }
    }
    if ("spatial" %in% rdn) {
        return(.coords_from_table(
            as.matrix(SingleCellExperiment::reducedDim(x, "spatial")), spots,
            "reducedDim(x, \"spatial\")"))
    }
    if (all(c("x", "y") %in% colnames(cd))) {
        return(.coords_from_table(as.data.frame(cd[, c("x", "y")]), spots,
                                  "colData(x)[, c(\"x\", \"y\")]"))
    }
    if (all(c("array_row", "array_col") %in% colnames(cd))) {
        return(.coords_from_table(
            as.data.frame(cd[, c("array_row", "array_col")]), spots,
            "colData(x)[, c(\"array_row\", \"array_col\")]"))
    }
    NULL
}

# Visium array indices travel with any coordinates (the backend builds the
# hexagonal images from them), also when the coordinates came from elsewhere
.with_array <- function(cc, annot) {
    if (is.null(cc)) return(NULL)
    if (all(c("array_row", "array_col") %in% colnames(annot)) &&
        !all(c("array_row", "array_col") %in% colnames(cc$obs))) {
        ar <- as.numeric(annot[["array_row"]])
        ac <- as.numeric(annot[["array_col"]])
        if (all(is.finite(ar)) && all(is.finite(ac))) {
            cc$obs$array_row <- ar
            cc$obs$array_col <- ac
        }
    }
    cc
}

.no_coords_sce <- function(x) {
    looked <- c(
        if (methods::is(x, "SpatialExperiment")) "spatialCoords(x)",
        "reducedDim(x, \"spatial\")",
        "colData(x) columns x/y",
        "colData(x) columns array_row/array_col (Visium)")
    .sigel_stop("no spatial coordinates found in x; looked for: ",
         paste(looked, collapse = "; "),
         ". Pass them with `coords =` (a data.frame/matrix with one row per ",
         "spot, a reducedDim name, or 2 colData column names).")
}

.fmt_names <- function(x, n = 15) {
    if (!length(x)) return("(none)")
    paste0(paste(utils::head(x, n), collapse = ", "),
           if (length(x) > n) ", ..." else "")
}

# ------------------------------------------------------------------ Seurat

.require_seurat <- function() {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) {
        .sigel_stop("the SeuratObject package is needed for Seurat input")
    }
}

.is_seurat <- function(x) inherits(x, "Seurat")

.seurat_assay <- function(x, assay = NULL) {
    if (is.null(assay)) assay <- SeuratObject::DefaultAssay(x)
    if (!assay %in% SeuratObject::Assays(x)) {
        .sigel_stop("assay \"", assay, "\" not in the Seurat object; assays: ",
             .fmt_names(SeuratObject::Assays(x)))
    }
    assay
}

.seurat_counts <- function(x, assay, slot = "counts") {
    slot <- match.arg(slot, c("counts", "data", "scale.data"))
    m <- SeuratObject::GetAssayData(x, slot = slot, assay = assay)
    if (is.null(dim(m)) || any(dim(m) == 0L)) {
        .sigel_stop("the '", slot, "' slot of assay \"", assay, "\" is empty")
    }
    m
}

.coords_seurat <- function(x, coords = NULL, image = NULL) {
    spots <- colnames(x)
    md <- x[[]]
    if (!is.null(coords)) {
        if (is.character(coords) && length(coords) == 2L) {
            miss <- setdiff(coords, colnames(md))
            if (length(miss)) {
                .sigel_stop("`coords` columns not in the Seurat meta.data: ",
                     paste(miss, collapse = ", "))
            }
            tab <- md[, coords, drop = FALSE]
            if (!all(coords %in% c("array_row", "array_col", "x", "y")))
                tab <- as.matrix(tab)
            return(.coords_from_table(tab, spots, "meta.data columns"))
        }
        return(.coords_from_table(coords, spots, "`coords`"))
    }
    imgs <- SeuratObject::Images(x)
    if (!is.null(image)) {
        if (!image %in% imgs) {
            .sigel_stop("image \"", image, "\" not in the Seurat object; images: ",
                 .fmt_names(imgs))
        }
        imgs <- image
    }
    if (length(imgs) > 1L) {
        .sigel_stop("the Seurat object holds ", length(imgs), " images (",
             .fmt_names(imgs), "); choose one with `image =` (and subset ",
             "the object to its spots)")
    }
    if (length(imgs) == 1L) {
        img <- x[[imgs]]
        # the methods for image classes (VisiumV1, SlideSeq) live in Seurat
        if (!requireNamespace("Seurat", quietly = TRUE)) {
            .sigel_stop("the Seurat package is needed to read the coordinates of ",
                 "image \"", imgs, "\"; or pass `coords =`")
        }
        where <- paste0("GetTissueCoordinates(x[[\"", imgs, "\"]])")
        if (inherits(img, "VisiumV1")) {
            tab <- SeuratObject::GetTissueCoordinates(
                img, scale = NULL, cols = c("row", "col"))
            colnames(tab) <- c("array_row", "array_col")
            where <- paste0(where, " (array row/col)")
        } else {
            tab <- SeuratObject::GetTissueCoordinates(img)
            num <- vapply(tab, is.numeric, logical(1))
            tab <- tab[, num, drop = FALSE]
            if (all(c("x", "y") %in% colnames(tab))) {
                tab <- as.matrix(tab[, c("x", "y")])
            } else {
                tab <- as.matrix(tab)
            }
        }
        miss <- setdiff(spots, rownames(tab))
        if (length(miss)) {
            .sigel_stop(length(miss), " spots of the Seurat object have no ",
                 "coordinates in image \"", imgs, "\" (e.g. ",
                 paste(utils::head(miss, 3), collapse = ", "), "); subset ",
                 "the object to the image's spots")
        }
        tab <- tab[spots, , drop = FALSE]
        return(.coords_from_table(tab, spots, where))
    }
    if (all(c("x", "y") %in% colnames(md))) {
        return(.with_array(.coords_from_table(md[, c("x", "y")], spots,
                                              "meta.data columns x/y"), md))
    }
    if (all(c("array_row", "array_col") %in% colnames(md))) {
        return(.coords_from_table(md[, c("array_row", "array_col")], spots,
                                  "meta.data columns array_row/array_col"))
    }
    .sigel_stop("no spatial coordinates found in the Seurat object; looked for: ",
         "an image (Images(x), e.g. Visium), meta.data columns ",
         "x/y and array_row/array_col. Pass them with `coords =` (a ",
         "data.frame/matrix with one row per spot or 2 meta.data column ",
         "names).")
}

# ------------------------------------------------------------ dispatch

# spot names, made up (spot1, ...) when the object has none
.spot_names <- function(x) {
    nm <- colnames(x)
    if (is.null(nm)) nm <- paste0("spot", seq_len(ncol(x)))
    nm
}

.library_size <- function(library_size, spots, annot, where) {
    if (is.null(library_size)) return(NULL)
    if (is.character(library_size) && length(library_size) == 1L) {
        if (is.null(annot) || !library_size %in% colnames(annot)) {
            .sigel_stop("`library_size = \"", library_size, "\"` is not a column of ",
                 where, "; available: ", .fmt_names(colnames(annot)))
        }
        library_size <- annot[[library_size]]
    }
    if (!is.numeric(library_size)) {
        .sigel_stop("`library_size` must be a numeric vector (one value per spot) ",
             "or the name of a column of ", where)
    }
    if (length(library_size) != length(spots)) {
        .sigel_stop("`library_size` has ", length(library_size), " values but ",
             "there are ", length(spots), " spots")
    }
    if (anyNA(library_size) || any(!is.finite(library_size)) ||
        any(library_size < 0)) {
        .sigel_stop("`library_size` must be finite and >= 0")
    }
    as.numeric(library_size)
}

# atomic annotation columns that travel into AnnData obs (no coordinates)
.annot_obs <- function(annot) {
    if (is.null(annot) || !ncol(annot)) return(NULL)
    annot <- as.data.frame(annot)
    keep <- vapply(annot, function(v) is.atomic(v) && is.null(dim(v)),
                   logical(1))
    keep <- keep & !colnames(annot) %in% c("array_row", "array_col", "x", "y",
                                           "sigel_library_size")
    if (!any(keep)) return(NULL)
    annot[, keep, drop = FALSE]
}

#' Plain parts (counts genes x spots, coordinates, library size) of any input
#' @keywords internal
#' @noRd
.input_parts <- function(x, assay = "counts", coords = NULL,
                         library_size = NULL, image = NULL, slot = NULL,
                         ...) {
    if (methods::is(x, "SingleCellExperiment")) {
        an <- SummarizedExperiment::assayNames(x)
        if (!is.character(assay) || length(assay) != 1L || !assay %in% an) {
            .sigel_stop("assay \"", paste(assay, collapse = ","), "\" not found in ",
                 "x; assayNames(x): ", .fmt_names(an))
        }
        counts <- SummarizedExperiment::assay(x, assay, withDimnames = TRUE)
        if (is.null(colnames(counts))) colnames(counts) <- .spot_names(x)
        cd <- SummarizedExperiment::colData(x)
        return(list(
            counts = counts,
            coords = .coords_sce(x, coords),
            library_size = .library_size(library_size, .spot_names(x), cd,
                                         "colData(x)"),
            obs = .annot_obs(cd), kind = "sce"))
    }
    if (.is_seurat(x)) {
        .require_seurat()
        a <- .seurat_assay(x, if (identical(assay, "counts")) NULL else assay)
        counts <- .seurat_counts(x, a, if (is.null(slot)) "counts" else slot)
        md <- x[[]]
        return(list(
            counts = counts,
            coords = .coords_seurat(x, coords, image),
            library_size = .library_size(library_size, colnames(x), md,
                                         "the Seurat meta.data"),
            obs = .annot_obs(md), kind = "seurat", assay = a))
    }
    if (is.matrix(x) || methods::is(x, "Matrix") || is.data.frame(x)) {
        if (is.null(coords)) {
            .sigel_stop("no spatial coordinates: a count matrix needs `coords`, a ",
                 "data.frame or matrix with one row per spot (columns x/y, ",
                 "array_row/array_col or any 2 numeric columns)")
        }
        counts <- .as_dgc(x, "x")
        if (is.null(colnames(counts))) {
            colnames(counts) <- if (!is.null(rownames(coords)) &&
                                    nrow(coords) == ncol(counts))
                rownames(coords) else paste0("spot", seq_len(ncol(counts)))
        }
        if (nrow(coords) != ncol(counts)) {
            .sigel_stop("mismatched dimensions: `coords` has ", nrow(coords),
                 " rows but the count matrix has ", ncol(counts),
                 " spots (columns; counts must be genes x spots)")
        }
        annot <- if (is.data.frame(coords)) coords else NULL
        return(list(
            counts = counts,
            coords = .coords_from_table(coords, colnames(counts), "`coords`"),
            library_size = .library_size(library_size, colnames(counts),
                                         annot, "`coords`"),
            obs = NULL, kind = "matrix"))
    }
    .sigel_stop("unsupported input of class ", class(x)[1], ": use a ",
         "SingleCellExperiment, SpatialExperiment, Seurat object or a count ",
         "matrix (genes x spots) with `coords`")
}
