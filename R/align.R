# Across samples: anchor alignment of two samples' gene embeddings, shifted
# (disease-associated) genes and altered gene-gene relations. Thin wrappers
# over the Python task cores in `sigel.tasks.align`; plots in ggplot2.

utils::globalVariables(".data")

# ------------------------------------------------------------- helpers

.align_mod <- function() {
    .sigel_py()
    reticulate::import("sigel.tasks.align", convert = FALSE)
}

.anchors_arg <- function(anchors) {
    if (is.null(anchors)) return(NULL)
    if (!is.character(anchors) || !length(anchors) || anyNA(anchors)) {
        stop("`anchors` must be NULL, \"shared\" or a character vector of ",
             "gene names", call. = FALSE)
    }
    if (length(anchors) == 1L && identical(anchors, "shared")) {
        return("shared")
    }
    as.list(unique(anchors))
}

# hard contexts of an object with results -> pandas Series ("context_k")
.contexts_py <- function(x) {
    ctx <- tryCatch(sigelContexts(x), error = function(e) NULL)
    if (is.null(ctx) || !nrow(ctx)) return(NULL)
    pd <- reticulate::import("pandas", convert = FALSE)
    lab <- ifelse(is.na(ctx$context), NA_character_,
                  paste0("context_", ctx$context))
    pd$Series(as.list(lab), index = as.list(rownames(ctx)), dtype = "object")
}

# two half-sample embeddings (binomial thinning of the counts) of an object
# with sigel results, embedded with its own model (Python tuple)
.split_halves_py <- function(x, genes, seed) {
    res <- .sigel_results(x)
    p <- res$params
    m <- .sigel_model_py(x)
    ad <- .as_anndata(x, assay = .null_or(p$assay, "counts"),
                      coords = .coords_arg(x, res),
                      library_size = .lib_arg(x, p$library_size),
                      slot = p$slot, image = p$image, check = FALSE)
    lib <- if (is.null(p$library_size)) NULL else "sigel_library_size"
    .py_call(.align_mod()$split_half_embeddings(
        m, ad, genes = as.list(genes),
        seed = as.integer(seed),
        library_size_key = lib, spatial_key = "spatial"),
        "split-half noise")
}

.alignment_py <- function(al) {
    if (!inherits(al, "SigelAlignment")) {
        stop("expected the result of sigelAlign()", call. = FALSE)
    }
    if (is.null(al$py) || reticulate::py_is_null_xptr(al$py)) {
        stop("the Python side of this alignment is gone (e.g. after ",
             "saveRDS/readRDS or a new session); run sigelAlign() again",
             call. = FALSE)
    }
    al$py
}

# an alignment from x (SigelAlignment) or from (x, query, ...)
.as_alignment <- function(x, query, dots) {
    if (inherits(x, "SigelAlignment")) {
        if (!is.null(query)) {
            stop("`query` must be NULL when `x` is an alignment",
                 call. = FALSE)
        }
        return(x)
    }
    if (is.null(query)) {
        stop("pass an alignment from sigelAlign(), or two samples: `x` ",
             "(reference) and `query`", call. = FALSE)
    }
    do.call(sigelAlign, c(list(x, query), dots))
}

# ------------------------------------------------------------- align

#' Align the gene embeddings of two samples
#'
#' Embeddings of separately trained SIGEL models live in different
#' coordinate systems. `sigelAlign()` fits a shallow map from the query
#' sample's space into the reference sample's space on anchor genes
#' (housekeeping genes by default) and applies it to every query gene.
#' Anchors are cross-validated (k folds): each anchor also gets a held-out
#' aligned vector from a map fitted without it; the downstream statistics
#' ([sigelShiftedGenes()], [sigelAlteredInteractions()]) use these, so
#' anchors are not favoured by having been fitted.
#'
#' With two objects carrying [runSIGEL()] results, the noise of every gene's
#' vector is also estimated (`noise`): each sample's counts are split at
#' random into two halves (binomial thinning) and both halves are embedded
#' with that sample's model; genes whose halves disagree (no stable pattern,
#' few counts) are expected to move more. This matters on real data.
#'
#' @param reference,query the two samples: objects with SIGEL results
#'   (`SingleCellExperiment`, `Seurat`, `SigelResult` from [runSIGEL()]) or
#'   numeric matrices of gene embeddings (genes x D, gene rownames).
#' @param anchors `NULL` (the bundled human housekeeping genes of Eisenberg
#'   & Levanon 2013, matched case-insensitively, so mouse symbols work),
#'   `"shared"` (every gene embedded in both; combine with `trim`) or a
#'   `character` vector of gene names.
#' @param method `character(1)`: `"auto"` (whichever of `"orthogonal"` and
#'   `"linear"` has the smaller cross-validated anchor error),
#'   `"orthogonal"` (Procrustes rotation with centring and isotropic
#'   scaling; keeps within-sample cosines), `"linear"` (ridge regression) or
#'   `"mlp"` (Procrustes plus a one-hidden-layer correction).
#' @param noise `logical(1)` or `NULL`: estimate each gene's split-half
#'   noise. `NULL`: when both inputs carry SIGEL results.
#' @param normalize `character(1)`: `"center"` subtracts each sample's mean
#'   vector (over the shared genes) first, `"unit"` also scales every gene
#'   vector to unit length, `"none"` uses the vectors as they are.
#' @param trim `numeric(1)` in `[0, 0.5]`: fraction of worst-fitting anchors
#'   left out of the fit.
#' @param n_folds `integer(1)`: folds of the anchor cross-validation.
#' @param alpha `numeric(1)`: ridge penalty (`"linear"`) or weight decay
#'   (`"mlp"`).
#' @param seed `integer(1)` or `NULL`: seeds the folds, the MLP and the
#'   count split (`NULL`: the backend's default seed, `sigel.settings.seed`).
#' @param verbose `logical(1)`: report the anchors found and the fit.
#' @return A `SigelAlignment` list: `aligned` (query genes x D, in the
#'   reference space), `reference` and `heldout` (shared genes x D; anchors
#'   held out), `anchors` (data.frame: `residual`, `heldout_shift`, `used`,
#'   `fold`), `diagnostics` (anchors requested / found, held-out RMSE and
#'   relative error, nearest-anchor accuracy), `noise` (data.frame or
#'   `NULL`), `params`, and `py` (the Python object, valid in this session).
#' @references Li et al. SIGEL. Genome Biology 26:287 (2025). Eisenberg E,
#'   Levanon EY. Human housekeeping genes, revisited. Trends Genet 29:569
#'   (2013).
#' @seealso [sigelShiftedGenes()], [sigelAlteredInteractions()],
#'   [plotAlignment()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     set.seed(1)
#'     ref <- matrix(rnorm(400), 100, 4,
#'                   dimnames = list(paste0("g", 1:100), NULL))
#'     rot <- qr.Q(qr(matrix(rnorm(16), 4)))
#'     qry <- ref %*% rot + matrix(rnorm(400, sd = 0.05), 100)
#'     qry[1:5, ] <- rnorm(20)
#'     al <- sigelAlign(ref, qry, anchors = paste0("g", 51:100))
#'     al
#'     head(sigelShiftedGenes(al))
#' }
#' }
#' @export
sigelAlign <- function(reference, query, anchors = NULL,
                       method = c("auto", "orthogonal", "linear", "mlp"),
                       noise = NULL,
                       normalize = c("center", "unit", "none"), trim = 0,
                       n_folds = 5L, alpha = 1, seed = NULL, verbose = FALSE) {
    method <- match.arg(method)
    anc <- .anchors_arg(anchors)
    noise <- .check_flag(noise, "noise", null_ok = TRUE)
    normalize <- match.arg(normalize)
    trim <- .check_number(trim, "trim", min = 0, max = 0.5)
    alpha <- .check_number(alpha, "alpha", min = 0)
    n_folds <- .check_number(n_folds, "n_folds", min = 2, whole = TRUE)
    seed <- .check_seed(seed, null_ok = TRUE)
    ref_m <- .emb_matrix(reference)
    qry_m <- .emb_matrix(query)
    shared <- intersect(rownames(ref_m), rownames(qry_m))
    if (length(shared) < 5L) {
        stop(length(shared), " genes are embedded in both samples; need at ",
             "least 5. Do both use the same gene identifiers?", call. = FALSE)
    }
    has_res <- .has_results(reference) && .has_results(query) &&
        !is.matrix(reference) && !is.matrix(query)
    if (is.null(noise)) noise <- has_res
    if (noise && !has_res) {
        stop("`noise = TRUE` needs two objects with runSIGEL() results ",
             "(their counts and models); got embedding matrices",
             call. = FALSE)
    }
    .with_verbosity(verbose, {
        halves <- list(NULL, NULL)
        if (noise) {
            # NULL: the backend's default seed, as Python's align() uses
            s0 <- if (is.null(seed)) {
                as.integer(reticulate::py_to_r(.sigel_py()$settings$seed))
            } else seed
            halves <- list(.split_halves_py(reference, shared, s0),
                           .split_halves_py(query, shared, s0 + 1L))
        }
        py <- .py_call(.align_mod()$align(
            .emb_py(ref_m), .emb_py(qry_m), anchors = anc, method = method,
            normalize = normalize, trim = trim, n_folds = n_folds,
            alpha = alpha, reference_data = halves[[1]],
            query_data = halves[[2]], seed = seed), "sigelAlign")
    })
    if (has_res) {
        rc <- .contexts_py(reference)
        qc <- .contexts_py(query)
        if (!is.null(rc)) reticulate::py_set_attr(py, "reference_contexts", rc)
        if (!is.null(qc)) reticulate::py_set_attr(py, "query_contexts", qc)
    }
    .alignment_r(py)
}

.alignment_r <- function(py) {
    diag <- reticulate::py_to_r(py$diagnostics)
    params <- reticulate::py_to_r(py$params)
    pd <- reticulate::import("pandas", convert = FALSE)
    is_df <- reticulate::import_builtins(convert = TRUE)$isinstance(
        py$noise, pd$DataFrame)
    nz <- if (isTRUE(is_df)) .py_df(py$noise) else NULL
    out <- list(
        aligned = .py_df_matrix(py$aligned),
        reference = .py_df_matrix(py$reference$loc[py$shared]),
        heldout = .py_df_matrix(py$heldout),
        anchors = .py_df(py$anchor_table),
        diagnostics = diag, noise = nz, params = params, py = py)
    class(out) <- "SigelAlignment"
    out
}

#' @export
print.SigelAlignment <- function(x, ...) {
    d <- x$diagnostics
    cat("SigelAlignment (", d$method, "): ", d$n_shared, " shared genes, ",
        d$n_anchors, " anchors found of ", d$n_anchors_requested,
        " requested (", d$anchor_source, ")\n", sep = "")
    cat(sprintf("  held-out anchor RMSE %.3f, relative error %.3f, ",
                d$heldout_rmse, d$heldout_relative_error),
        sprintf("nearest-anchor accuracy %.2f\n", d$heldout_nn_accuracy),
        sep = "")
    cat("  noise estimate: ", if (is.null(x$noise)) "no" else "yes",
        "\n", sep = "")
    invisible(x)
}

# ------------------------------------------------------------- shifted genes

#' Genes that moved between two samples (disease-associated genes)
#'
#' After [sigelAlign()], a gene's shift is the distance between its
#' reference vector and its aligned query vector (held-out vector for
#' anchors). Shifts are standardised against the anchors' held-out shifts
#' (robust z-score of the log shift; with a noise estimate, relative to the
#' shift expected from the gene's split-half noise), giving p-values,
#' Benjamini-Hochberg q-values and a rank.
#'
#' @param x a `SigelAlignment` from [sigelAlign()], or the reference sample
#'   (then give `query`; see [sigelAlign()]).
#' @param query the query sample when `x` is not an alignment.
#' @param metric `character(1)`: `"euclidean"` or `"cosine"` (1 - cosine).
#' @param null `character(1)`: `"lognormal"` (normal tail of the robust
#'   z-score) or `"empirical"` (fraction of anchors with a larger shift).
#' @param use_noise `logical(1)` or `NULL` (use the noise estimate when
#'   there is one).
#' @param ... passed to [sigelAlign()] when `x` is not an alignment.
#' @return A data.frame with gene rownames, sorted by `rank`: `shift`,
#'   `cosine`, `score`, `pval`, `qval`, `rank`, `anchor` and, when
#'   available, `noise`, `expected_shift`, `context_reference`,
#'   `context_query`.
#' @seealso [sigelAlign()], [plotShiftedGenes()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     set.seed(1)
#'     ref <- matrix(rnorm(400), 100, 4,
#'                   dimnames = list(paste0("g", 1:100), NULL))
#'     qry <- ref + matrix(rnorm(400, sd = 0.05), 100)
#'     qry[1:5, ] <- rnorm(20)
#'     tab <- sigelShiftedGenes(ref, qry, anchors = paste0("g", 51:100))
#'     head(tab)
#'     plotShiftedGenes(tab)
#' }
#' }
#' @export
sigelShiftedGenes <- function(x, query = NULL,
                              metric = c("euclidean", "cosine"),
                              null = c("lognormal", "empirical"),
                              use_noise = NULL, ...) {
    metric <- match.arg(metric)
    null <- match.arg(null)
    use_noise <- .check_flag(use_noise, "use_noise", null_ok = TRUE)
    al <- .as_alignment(x, query, list(...))
    py <- .alignment_py(al)
    tab <- .py_call(.align_mod()$shifted_genes(
        py, metric = metric, null = null, use_noise = use_noise),
        "sigelShiftedGenes")
    .py_df(tab)
}

# ------------------------------------------------------ altered interactions

#' Gene pairs whose relation changed between two samples
#'
#' For focus genes (given, or the most shifted) paired with every shared
#' gene, the cosine similarity of the two genes' vectors in the reference
#' and (after alignment) in the query; the change is tested against the
#' changes of anchor-anchor pairs. Pairs are computed in one block (focus x
#' partners), never all genes x all genes.
#'
#' @param x a `SigelAlignment` or the reference sample (then give `query`).
#' @param query the query sample when `x` is not an alignment.
#' @param genes `character` or `NULL`: focus genes (default: the `n_genes`
#'   most shifted genes).
#' @param n_genes `integer(1)` or `NULL`: top shifted genes added to the
#'   focus set (default 50 without `genes`, else 0).
#' @param partners `character` or `NULL`: genes paired with the focus genes
#'   (default all shared genes).
#' @param top `integer(1)` or `NULL`: number of ranked pairs returned
#'   (q-values always use every tested pair).
#' @param standardize `character(1)`: `"genes"` (default) removes from
#'   each pair's change its two genes' median changes against random genes
#'   and divides by their robust spreads (a pair is altered beyond its
#'   genes' overall movement or noise), `"noise"` scales by the change
#'   expected from the split-half noise (needs a noise estimate; more power
#'   on synthetic data but even less calibrated on real adjacent sections),
#'   `"auto"` picks `"noise"` when noise estimates exist, `"none"` uses the
#'   raw change. On real sections read the ranking rather than the q-values:
#'   on adjacent DLPFC sections, where nothing changed, `"genes"` still calls
#'   5-17 % of the pairs of the 50 most shifted genes at q < 0.05,
#'   depending on the fit (17 % with the current default model).
#' @param null `character(1)`: `"normal"` (robust, two-sided) or
#'   `"empirical"`.
#' @param seed `integer(1)` or `NULL`: seeds the probe genes and the subset
#'   of null pairs (`NULL`: the backend's default seed).
#' @param ... passed to [sigelAlign()] when `x` is not an alignment.
#' @return A data.frame (rownames `"geneA|geneB"`) sorted by `rank`:
#'   `gene_a`, `gene_b`, `cos_reference`, `cos_query`, `delta`, `score`,
#'   `pval`, `qval`, `rank` and, with contexts, `context_reference_a/b`,
#'   `context_query_a/b`. [sigelInteractionModules()] summarises it by
#'   context pair.
#' @seealso [sigelAlign()], [plotAlteredInteractions()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     set.seed(1)
#'     ref <- matrix(rnorm(400), 100, 4,
#'                   dimnames = list(paste0("g", 1:100), NULL))
#'     qry <- ref + matrix(rnorm(400, sd = 0.05), 100)
#'     qry["g1", ] <- ref["g2", ]
#'     al <- sigelAlign(ref, qry, anchors = paste0("g", 51:100))
#'     pairs <- sigelAlteredInteractions(al, genes = "g1", top = 5)
#'     pairs
#'     plotAlteredInteractions(sigelAlteredInteractions(al, top = NULL))
#' }
#' }
#' @export
sigelAlteredInteractions <- function(x, query = NULL, genes = NULL,
                                     n_genes = NULL, partners = NULL,
                                     top = 500L,
                                     standardize = c("genes", "noise", "auto", "none"),
                                     null = c("normal", "empirical"),
                                     seed = NULL, ...) {
    standardize <- match.arg(standardize)
    null <- match.arg(null)
    if (!is.null(genes) && (!is.character(genes) || anyNA(genes))) {
        stop("`genes` must be NULL or a character vector", call. = FALSE)
    }
    if (!is.null(partners) && (!is.character(partners) || anyNA(partners))) {
        stop("`partners` must be NULL or a character vector", call. = FALSE)
    }
    n_genes <- .check_number(n_genes, "n_genes", min = 0, whole = TRUE,
                             null_ok = TRUE)
    top <- .check_number(top, "top", min = 1, whole = TRUE,
                         null_ok = TRUE)
    seed <- .check_seed(seed, null_ok = TRUE)
    al <- .as_alignment(x, query, list(...))
    py <- .alignment_py(al)
    tab <- .py_call(.align_mod()$altered_interactions(
        py, if (is.null(genes)) NULL else as.list(genes), n_genes = n_genes,
        partners = if (is.null(partners)) NULL else as.list(partners),
        top = top, standardize = standardize, null = null, seed = seed),
        "sigelAlteredInteractions")
    .py_df(tab)
}

#' Which contexts the altered gene pairs fall in
#'
#' Counts the altered pairs (`qval < alpha`) of [sigelAlteredInteractions()]
#' per unordered pair of contexts (of the reference or the query model).
#'
#' @param pairs a data.frame from [sigelAlteredInteractions()] of samples
#'   with contexts (objects with [runSIGEL()] results).
#' @param side `character(1)`: contexts of the `"reference"` or the `"query"`
#'   model.
#' @param alpha `numeric(1)`: q-value cut-off.
#' @return A data.frame (rownames `"ctxA|ctxB"`): `context_a`, `context_b`,
#'   `n_pairs`, `n_gained`, `n_lost`, `mean_delta`, `n_genes`.
#' @seealso [sigelAlteredInteractions()]
#' @examples
#' pairs <- data.frame(gene_a = c("a", "a"), gene_b = c("b", "c"),
#'                     delta = c(0.5, -0.4), qval = c(0.01, 0.02),
#'                     context_reference_a = "context_0",
#'                     context_reference_b = "context_1")
#' sigelInteractionModules(pairs)
#' @export
sigelInteractionModules <- function(pairs, side = c("reference", "query"),
                                    alpha = 0.05) {
    side <- match.arg(side)
    alpha <- .check_number(alpha, "alpha", min = 0, max = 1)
    ca <- paste0("context_", side, "_a")
    cb <- paste0("context_", side, "_b")
    need <- c("gene_a", "gene_b", "delta", "qval", ca, cb)
    if (!is.data.frame(pairs) || !all(need %in% colnames(pairs))) {
        stop("`pairs` must be a data.frame from sigelAlteredInteractions() ",
             "with columns ", paste(need, collapse = ", "),
             " (contexts need objects with runSIGEL() results)",
             call. = FALSE)
    }
    cols <- c("context_a", "context_b", "n_pairs", "n_gained", "n_lost",
              "mean_delta", "n_genes")
    sig <- pairs[!is.na(pairs$qval) & pairs$qval < alpha, , drop = FALSE]
    if (!nrow(sig)) {
        out <- data.frame(matrix(nrow = 0, ncol = length(cols)))
        colnames(out) <- cols
        return(out)
    }
    a <- as.character(sig[[ca]])
    b <- as.character(sig[[cb]])
    lo <- ifelse(a <= b, a, b)
    hi <- ifelse(a <= b, b, a)
    key <- paste(lo, hi, sep = "|")
    parts <- split(seq_len(nrow(sig)), factor(key, levels = unique(key)))
    out <- do.call(rbind, lapply(names(parts), function(k) {
        i <- parts[[k]]
        d <- sig$delta[i]
        data.frame(context_a = lo[i[1]], context_b = hi[i[1]],
                   n_pairs = length(i), n_gained = sum(d > 0),
                   n_lost = sum(d < 0), mean_delta = mean(d),
                   n_genes = length(unique(c(sig$gene_a[i], sig$gene_b[i]))),
                   stringsAsFactors = FALSE)
    }))
    out <- out[order(-out$n_pairs, -out$mean_delta), , drop = FALSE]
    rownames(out) <- paste(out$context_a, out$context_b, sep = "|")
    out
}

# ------------------------------------------------------------- plots

#' Plots of the cross-sample analysis
#'
#' `plotShiftedGenes()`: shift score by rank (anchors grey, shifted genes
#' red, top genes labelled). `plotAlignment()`: the two samples' gene vectors
#' after alignment, intermixed in one PCA layout; lines join a gene's
#' reference and query positions for the most shifted genes.
#' `plotAlteredInteractions()`: cosine of each pair in the reference vs the
#' query, top altered pairs highlighted.
#'
#' @param table a data.frame from [sigelShiftedGenes()].
#' @param alignment a `SigelAlignment` from [sigelAlign()].
#' @param pairs a data.frame from [sigelAlteredInteractions()] (`top =
#'   NULL` shows every tested pair).
#' @param n_label `integer(1)`: top genes / pairs labelled.
#' @param n_highlight `integer(1)`: top genes joined by a line / top pairs
#'   in red.
#' @param highlight `character` or `NULL`: genes joined by a line (default
#'   the `n_highlight` most shifted).
#' @param alpha `numeric(1)`: q-value cut-off for the colouring.
#' @return A `ggplot`.
#' @seealso [sigelAlign()], [sigelShiftedGenes()],
#'   [sigelAlteredInteractions()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     set.seed(1)
#'     ref <- matrix(rnorm(400), 100, 4,
#'                   dimnames = list(paste0("g", 1:100), NULL))
#'     qry <- ref + matrix(rnorm(400, sd = 0.05), 100)
#'     qry[1:5, ] <- rnorm(20)
#'     al <- sigelAlign(ref, qry, anchors = paste0("g", 51:100))
#'     plotAlignment(al)
#'     plotShiftedGenes(sigelShiftedGenes(al))
#'     plotAlteredInteractions(sigelAlteredInteractions(al, top = NULL))
#' }
#' }
#' @name align-plots
NULL

#' @rdname align-plots
#' @export
plotShiftedGenes <- function(table, n_label = 10L, alpha = 0.05) {
    need <- c("rank", "score", "qval", "anchor")
    if (!is.data.frame(table) || !all(need %in% colnames(table))) {
        stop("`table` must be a data.frame from sigelShiftedGenes()",
             call. = FALSE)
    }
    n_label <- .check_number(n_label, "n_label", min = 0, whole = TRUE)
    d <- table[order(table$rank), , drop = FALSE]
    d$gene <- rownames(d)
    d$class <- ifelse(d$anchor, "anchor (held-out)",
                      ifelse(d$qval < alpha, paste0("q < ", alpha), "gene"))
    # labels stacked in a column right of the top genes (no overlap)
    k <- min(n_label, nrow(d))
    rng <- range(d$score, finite = TRUE)
    lab <- data.frame(x = d$rank[seq_len(k)], y = d$score[seq_len(k)],
                      gene = d$gene[seq_len(k)],
                      lx = max(d$rank) * 0.1,
                      ly = rng[2] - diff(rng) * 0.07 * (seq_len(k) - 1))
    cols <- c("#bbbbbb", "#4477aa", "#cc3311")
    names(cols) <- c("anchor (held-out)", "gene", paste0("q < ", alpha))
    ggplot2::ggplot(d, ggplot2::aes(x = .data$rank, y = .data$score)) +
        ggplot2::geom_point(ggplot2::aes(colour = .data$class), size = 0.9) +
        ggplot2::geom_segment(data = lab, ggplot2::aes(
            x = .data$x, y = .data$y, xend = .data$lx, yend = .data$ly),
            colour = "grey60", linewidth = 0.2) +
        ggplot2::geom_text(data = lab, ggplot2::aes(
            x = .data$lx, y = .data$ly, label = .data$gene),
            hjust = -0.05, size = 2.6) +
        ggplot2::scale_colour_manual(values = cols, name = NULL) +
        ggplot2::labs(x = "rank", y = "shift score (robust z)",
                      title = sprintf("%d genes shifted at q < %g",
                                      sum(!d$anchor & d$qval < alpha),
                                      alpha)) +
        ggplot2::theme_minimal()
}

#' @rdname align-plots
#' @export
plotAlignment <- function(alignment, n_highlight = 10L, highlight = NULL) {
    if (!inherits(alignment, "SigelAlignment")) {
        stop("`alignment` must be the result of sigelAlign()", call. = FALSE)
    }
    n_highlight <- .check_number(n_highlight, "n_highlight", min = 0,
                                 whole = TRUE)
    R <- alignment$reference
    Q <- alignment$heldout[rownames(R), , drop = FALSE]
    if (is.null(highlight) && n_highlight > 0L) {
        highlight <- utils::head(rownames(sigelShiftedGenes(alignment)),
                                 n_highlight)
    }
    highlight <- intersect(as.character(highlight), rownames(R))
    X <- rbind(R, Q)
    pc <- stats::prcomp(X, center = TRUE, rank. = 2)$x
    n <- nrow(R)
    d <- data.frame(PC1 = pc[, 1], PC2 = pc[, 2],
                    sample = rep(c("reference", "query (aligned)"),
                                 each = n),
                    gene = c(rownames(R), rownames(R)))
    seg <- data.frame(x = pc[match(highlight, rownames(R)), 1],
                      y = pc[match(highlight, rownames(R)), 2],
                      xend = pc[n + match(highlight, rownames(R)), 1],
                      yend = pc[n + match(highlight, rownames(R)), 2],
                      gene = highlight)
    dg <- alignment$diagnostics
    ggplot2::ggplot(d, ggplot2::aes(x = .data$PC1, y = .data$PC2)) +
        ggplot2::geom_point(ggplot2::aes(colour = .data$sample), size = 0.7,
                            alpha = 0.6) +
        ggplot2::geom_segment(data = seg, ggplot2::aes(
            x = .data$x, y = .data$y, xend = .data$xend, yend = .data$yend),
            colour = "#cc3311", linewidth = 0.4) +
        ggplot2::geom_text(data = seg, ggplot2::aes(
            x = .data$xend, y = .data$yend, label = .data$gene),
            size = 2.6, hjust = -0.1, colour = "#cc3311") +
        ggplot2::scale_colour_manual(values = c(
            "reference" = "#4477aa", "query (aligned)" = "#ee7733"),
            name = NULL) +
        ggplot2::labs(title = sprintf(
            "%d genes, %d anchors (%s)", n, dg$n_anchors, dg$method)) +
        ggplot2::theme_minimal()
}

#' @rdname align-plots
#' @export
plotAlteredInteractions <- function(pairs, n_highlight = 20L, n_label = 8L,
                                    alpha = 0.05) {
    need <- c("gene_a", "gene_b", "cos_reference", "cos_query", "rank",
              "qval")
    if (!is.data.frame(pairs) || !all(need %in% colnames(pairs))) {
        stop("`pairs` must be a data.frame from sigelAlteredInteractions()",
             call. = FALSE)
    }
    n_highlight <- .check_number(n_highlight, "n_highlight", min = 0,
                                 whole = TRUE)
    n_label <- .check_number(n_label, "n_label", min = 0, whole = TRUE)
    d <- pairs[order(pairs$rank), , drop = FALSE]
    i <- seq_len(nrow(d))
    d$class <- ifelse(i <= n_highlight, paste("top", n_highlight),
                      ifelse(d$qval < alpha, paste0("q < ", alpha), "pair"))
    d$label <- ifelse(i <= n_label, paste(d$gene_a, d$gene_b, sep = "-"),
                      NA_character_)
    cols <- c("#bbbbbb", "#ee7733", "#cc3311")
    names(cols) <- c("pair", paste0("q < ", alpha), paste("top", n_highlight))
    d <- d[rev(i), , drop = FALSE]
    ggplot2::ggplot(d, ggplot2::aes(x = .data$cos_reference,
                                    y = .data$cos_query)) +
        ggplot2::geom_abline(slope = 1, intercept = 0, linetype = 2,
                             linewidth = 0.3) +
        ggplot2::geom_point(ggplot2::aes(colour = .data$class), size = 0.8) +
        ggplot2::geom_text(ggplot2::aes(label = .data$label), size = 2.3,
                           hjust = -0.1, na.rm = TRUE) +
        ggplot2::scale_colour_manual(values = cols, name = NULL) +
        ggplot2::labs(x = "cosine in reference",
                      y = "cosine in query (aligned)") +
        ggplot2::theme_minimal()
}
