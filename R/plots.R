# ggplot2 plots of gene images, context maps and the embedding layout.

# H x W matrices (NaN off tissue) -> long data.frame of in-tissue pixels
.images_long <- function(mats) {
    out <- lapply(names(mats), function(nm) {
        m <- mats[[nm]]
        d <- data.frame(
            row = rep(seq_len(nrow(m)), times = ncol(m)),
            col = rep(seq_len(ncol(m)), each = nrow(m)),
            value = as.vector(m))
        d <- d[is.finite(d$value), , drop = FALSE]
        d$panel <- nm
        d
    })
    d <- do.call(rbind, out)
    d$panel <- factor(d$panel, levels = names(mats))
    d
}

.raster_plot <- function(d, ncol, fill, title) {
    ggplot2::ggplot(d, ggplot2::aes(x = col, y = row,
                                    fill = value)) +
        # one tile per pixel of the image grid: off-tissue pixels are
        # absent, which geom_raster() would warn about (uneven intervals)
        ggplot2::geom_tile(width = 1, height = 1) +
        ggplot2::facet_wrap(~panel, ncol = ncol) +
        ggplot2::scale_y_reverse() +
        ggplot2::coord_equal() +
        ggplot2::scale_fill_viridis_c(name = fill) +
        ggplot2::labs(x = NULL, y = NULL, title = title) +
        ggplot2::theme_minimal() +
        ggplot2::theme(axis.text = ggplot2::element_blank(),
                       panel.grid = ggplot2::element_blank())
}

.has_results <- function(x) {
    tryCatch({
        .sigel_results(x)
        TRUE
    }, error = function(e) FALSE)
}

#' Plot gene images
#'
#' Shows genes as the images SIGEL learns from: spots placed on the pixel
#' grid, library-size normalised, `log1p`, scaled per gene to `[0, 1]`; white
#' is outside the tissue. For an object with [runSIGEL()] results the model's
#' image settings are used, otherwise the defaults.
#'
#' @param x a `SingleCellExperiment`, `Seurat` object (with coordinates; see
#'   [runSIGEL()]), or a `SigelResult` from the session that fitted it.
#' @param genes `character`: genes to show.
#' @param ncol `integer(1)` or `NULL`: facet columns.
#' @param ... passed to the coordinate extraction for objects without
#'   results: `assay`, `coords`, `library_size` (see [runSIGEL()]).
#' @return A `ggplot`.
#' @seealso [plotContexts()], [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     plotGeneImages(sce, c("Penk", "Doc2g", "Cdhr1", "Kctd12"))
#' }
#' }
#' @export
plotGeneImages <- function(x, genes, ncol = NULL, ...) {
    if (missing(genes) || !is.character(genes) || !length(genes)) {
        stop("`genes` must name the genes to plot", call. = FALSE)
    }
    genes <- unique(genes)
    imgs <- if (.has_results(x)) {
        emb_genes <- rownames(sigelEmbeddings(x))
        miss <- setdiff(genes, emb_genes)
        if (length(miss)) {
            stop("genes without sigel images (not in the data, or filtered ",
                 "out before training): ", .fmt_names(miss, 10),
                 call. = FALSE)
        }
        .sigel_images_py(x, genes)
    } else {
        all_genes <- rownames(x)
        miss <- setdiff(genes, all_genes)
        if (length(miss)) {
            stop("genes not in x: ", .fmt_names(miss, 10), call. = FALSE)
        }
        ad <- .as_anndata(x, ...)
        .py_call(.sigel_py()$GeneImages$from_anndata(
            ad, genes = as.list(genes), min_spots = 0L))
    }
    kept <- .py_chr(imgs$genes)
    gone <- setdiff(genes, kept)
    if (length(gone)) {
        stop("genes filtered out of the images (too few spots or excluded ",
             "prefix): ", .fmt_names(gone, 10), call. = FALSE)
    }
    mats <- lapply(genes, function(g) .py_matrix(imgs$image(g)))
    names(mats) <- genes
    .raster_plot(.images_long(mats), ncol, "scaled\nexpression",
                 "Gene images")
}

# context maps: Python sigel.tl.context_maps when present, else computed here
.context_maps <- function(x, contexts = NULL, min_membership = 0.1) {
    mem <- sigelMemberships(x)
    imgs <- .sigel_images_py(x)
    tl <- .sigel_py()$tl
    has <- tryCatch(reticulate::py_has_attr(tl, "context_maps"),
                    error = function(e) FALSE)
    if (isTRUE(has)) {
        pd <- reticulate::import("pandas", convert = FALSE)
        memp <- pd$DataFrame(reticulate::r_to_py(unname(mem)),
                             index = as.list(rownames(mem)),
                             columns = as.list(colnames(mem)))
        maps <- .py_call(tl$context_maps(memp, images = imgs,
                             contexts = if (is.null(contexts)) NULL else
                                 as.list(contexts),
                             min_membership = min_membership))
        nms <- .py_chr(reticulate::import_builtins(convert = FALSE)$list(
            maps$keys()))
        out <- lapply(nms, function(n) .py_matrix(maps$`__getitem__`(n)))
        names(out) <- nms
        return(out)
    }
    # fallback: membership-weighted mean of the genes' images, in R
    ig <- .py_chr(imgs$genes)
    V <- .py_sparse(imgs$values, rownames = ig)
    H <- reticulate::py_to_r(imgs$height)
    W <- reticulate::py_to_r(imgs$width)
    mask <- reticulate::py_to_r(imgs$mask$ravel())
    common <- intersect(rownames(mem), ig)
    Wt <- mem[common, , drop = FALSE]
    if (!is.null(contexts)) {
        Wt <- Wt[, as.character(contexts), drop = FALSE]
    }
    Wt[Wt < min_membership] <- 0
    Wt <- Wt[, colSums(Wt) > 0, drop = FALSE]
    M <- as.matrix(Matrix::crossprod(Wt, V[common, , drop = FALSE]))
    M <- M / colSums(Wt)
    M[, !mask] <- NA
    out <- lapply(seq_len(nrow(M)), function(k)
        matrix(M[k, ], nrow = H, ncol = W, byrow = TRUE))
    names(out) <- rownames(M)
    out
}

#' Plot SIGEL contexts
#'
#' `type = "map"`: every context on the tissue, the membership-weighted mean
#' of its genes' normalised images (Python `sigel.tl.context_maps`).
#' `type = "embedding"`: the gene embeddings on their first two principal
#' components, coloured by context.
#'
#' @param x an object returned by [runSIGEL()] (`SingleCellExperiment`,
#'   `Seurat`, or a `SigelResult` in the session that fitted it; maps need
#'   the gene images, rebuilt from the object's data).
#' @param type `"map"` or `"embedding"`.
#' @param contexts `NULL` (the `n_max` largest contexts) or contexts to
#'   show (0-based integers or names `"context_<k>"`).
#' @param n_max `integer(1)`: with `contexts = NULL`, show the `n_max`
#'   contexts with the most genes (default 12; `Inf` for all). In the
#'   embedding plot the other contexts are drawn in grey as `"other"`.
#' @param ncol `integer(1)` or `NULL`: facet columns of the maps.
#' @param min_membership `numeric(1)`: memberships below this count as 0 in
#'   the maps.
#' @return A `ggplot`.
#' @seealso [plotGeneImages()], [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     plotContexts(sce)
#'     plotContexts(sce, type = "embedding")
#' }
#' }
#' @export
plotContexts <- function(x, type = c("map", "embedding"), contexts = NULL,
                         ncol = NULL, min_membership = 0.1, n_max = 12L) {
    type <- match.arg(type)
    if (!identical(n_max, Inf)) {
        n_max <- .check_number(n_max, "n_max", min = 1, whole = TRUE)
    }
    min_membership <- .check_number(min_membership, "min_membership",
                                    min = 0, max = 1)
    ctx <- sigelContexts(x)
    sizes <- table(paste0("context_", ctx$context))
    if (!is.null(contexts) && is.numeric(contexts)) {
        contexts <- paste0("context_", as.integer(contexts))
    }
    shown <- contexts
    if (is.null(shown)) {
        # the largest n_max contexts (ties: lower context number first)
        k <- as.integer(sub("^context_", "", names(sizes)))
        ord <- order(-as.vector(sizes), k)
        shown <- names(sizes)[ord][seq_len(min(length(ord), n_max))]
        shown <- shown[order(as.integer(sub("^context_", "", shown)))]
    }
    if (type == "embedding") return(.plot_embedding(x, shown))
    maps <- .context_maps(x, shown, min_membership)
    n <- sizes[names(maps)]
    n[is.na(n)] <- 0L
    names(maps) <- paste0(names(maps), " (", as.integer(n), " genes)")
    title <- "SIGEL context maps"
    if (is.null(contexts) && length(sizes) > length(maps)) {
        title <- paste0(title, ": the ", length(maps), " largest of ",
                        length(sizes), " contexts (see n_max)")
    }
    .raster_plot(.images_long(maps), ncol, "mean\nscaled\nexpression",
                 title)
}

.plot_embedding <- function(x, contexts) {
    emb <- sigelEmbeddings(x)
    ctx <- sigelContexts(x)[rownames(emb), , drop = FALSE]
    pc <- stats::prcomp(emb, center = TRUE, scale. = FALSE)
    ve <- pc$sdev^2 / sum(pc$sdev^2)
    lab <- paste0("context_", ctx$context)
    lev <- sort(unique(as.integer(sub("^context_", "", contexts))))
    grp <- ifelse(lab %in% contexts, as.character(ctx$context), "other")
    d <- data.frame(PC1 = pc$x[, 1], PC2 = pc$x[, 2],
                    context = factor(grp, levels = c(lev, "other")),
                    confidence = ctx$confidence,
                    gene = rownames(emb))
    d <- d[order(d$context == "other", decreasing = TRUE), , drop = FALSE]
    d$context <- droplevels(d$context)
    pal <- grDevices::hcl.colors(max(1L, length(lev)), "Dark 3")
    cols <- c(stats::setNames(pal[seq_along(lev)], lev), other = "grey80")
    ggplot2::ggplot(d, ggplot2::aes(x = PC1, y = PC2,
                                    colour = context,
                                    alpha = confidence)) +
        ggplot2::geom_point(size = 1.2) +
        ggplot2::scale_colour_manual(values = cols) +
        ggplot2::scale_alpha_continuous(range = c(0.3, 1)) +
        ggplot2::labs(
            x = sprintf("PC1 (%.0f%%)", 100 * ve[1]),
            y = sprintf("PC2 (%.0f%%)", 100 * ve[2]),
            title = "SIGEL gene embeddings", colour = "context") +
        ggplot2::theme_minimal()
}
