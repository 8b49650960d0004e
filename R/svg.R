# Pattern detection on the gene embedding: spatially variable genes against
# simulated homogeneous controls, designated-pattern search, and the
# comparison with the SPARK-X-style test and Moran's I (R/sparkx.R).
# Thin wrappers: check inputs in R, call the Python task cores
# (sigel.tl.svg, sigel.tl.pattern_search), return native R results.

# ------------------------------------------------------------------ helpers

# The data (AnnData) and the trained model behind x; `model` (an object with
# sigel results, a SigelModel or a saved directory) when x is plain data.
.task_inputs <- function(x, model = NULL, coords = NULL, library_size = NULL,
                         assay = NULL) {
    if (inherits(x, "SigelResult")) {
        stop("a SigelResult holds no data: pass the count matrix as `x` ",
             "with `model = <the SigelResult>` and `coords`", call. = FALSE)
    }
    carrier <- if (is.null(model)) x else model
    res <- tryCatch(.sigel_results(carrier), error = function(e) NULL)
    if (is.null(res) && is.null(model)) {
        stop("no sigel results in x: run runSIGEL(x) first, or pass ",
             "`model =`", call. = FALSE)
    }
    p <- if (is.null(res)) list() else res$params
    if (is.null(coords) && !is.null(res)) coords <- .coords_arg(x, res)
    if (is.null(library_size)) library_size <- .lib_arg(x, p$library_size)
    if (is.null(assay)) assay <- .null_or(p$assay, "counts")
    parts <- .input_parts(x, assay = assay, coords = coords,
                          library_size = library_size, slot = p$slot,
                          image = p$image)
    .sigel_py()
    ad <- .py_call(.anndata_from_parts(parts$counts, parts$coords,
                                       parts$library_size,
                                       spatial_key = "spatial"))
    opts <- list(spatial_key = "spatial")
    opts["library_size_key"] <- list(
        if (is.null(parts$library_size)) NULL else "sigel_library_size")
    list(ad = ad, opts = opts, model = .sigel_model_py(carrier),
         parts = parts)
}

# numeric (spots x 2) coordinates of the parts, as the backend reads them
.parts_xy <- function(parts) {
    cc <- parts$coords
    if (!is.null(cc$obsm)) return(as.matrix(cc$obsm)[, 1:2, drop = FALSE])
    o <- cc$obs
    if (all(c("x", "y") %in% colnames(o))) return(cbind(o$x, o$y))
    if (all(c("array_row", "array_col") %in% colnames(o))) {
        return(cbind(o$array_col, o$array_row))
    }
    stop("could not read the spot coordinates", call. = FALSE)
}

.store_gene_table <- function(x, tab, cols, prefix, tool) {
    if (methods::is(x, "SummarizedExperiment")) {
        rd <- SummarizedExperiment::rowData(x)
        pos <- match(rownames(x), rownames(tab))
        for (cl in cols) rd[[paste0(prefix, "_", cl)]] <- tab[[cl]][pos]
        SummarizedExperiment::rowData(x) <- rd
        S4Vectors::metadata(x)[[tool]] <- tab
        return(x)
    }
    if (.is_seurat(x)) {
        assay <- SeuratObject::DefaultAssay(x)
        feats <- rownames(x[[assay]])
        pos <- match(feats, rownames(tab))
        pre <- gsub("_", ".", prefix, fixed = TRUE)
        for (cl in cols) x[[assay]][[paste0(pre, ".", cl)]] <- tab[[cl]][pos]
        x@tools[[tool]] <- tab
        return(x)
    }
    tab
}

# ----------------------------------------------------------------- sigelSVG

#' Spatially variable genes against simulated homogeneous controls
#'
#' For every gene, simulates `n_null` spatially homogeneous controls from
#' the gene's own marginal shuffled over the tissue (its values permuted, or
#' a fitted zero-inflated negative binomial, see [simulateHomogeneous()];
#' both keep each spot's library size), images and embeds
#' them with the trained SIGEL encoder in batches, and scores the gene by the
#' distance of its vector from the mean of the controls of the genes nearest
#' in expression level, over their typical spread.
#' P-values come from the controls' own (leave-one-out) scores pooled over
#' genes of similar mean count; q-values by Benjamini-Hochberg.
#'
#' @param x an object with SIGEL results from [runSIGEL()]
#'   (`SingleCellExperiment`, `SpatialExperiment`, `Seurat`), or plain data
#'   (such an object, or a count matrix genes x spots with `coords`) together
#'   with `model`.
#' @param n_null `integer(1)`: controls simulated per gene (with
#'   `reference = "gene"`: `n_null + 1`, and `n_null` at least 2). With the
#'   pooled `"level"` reference a gene's score rests on the controls of 101
#'   genes, so a few per gene suffice.
#' @param n_bins `integer(1)`: expression bins for pooling null scores.
#' @param genes `character` or `NULL`: genes to test (default: every gene
#'   the model embedded). With `reference = "level"` the genes tested
#'   together lend each other their controls, so test all of them in one
#'   call (scores change somewhat with the set a gene is tested in, less
#'   than with `"gene"`).
#' @param metric `character(1)`: `"cosine"`, `"euclidean"` or `"whitened"`
#'   (unit vectors; distances in the controls' own covariance pooled per
#'   expression bin).
#' @param reference `character(1)`: what a gene's vector is compared with:
#'   `"level"` (default), the controls of the 101 genes nearest in
#'   expression level, pooled (where a homogeneous gene of that level lands,
#'   and how far it wanders), or `"gene"`, the gene's own `n_null` controls
#'   (`n_null + 1` are simulated), which measure mostly their own noise. On
#'   the olfactory bulb `"level"` found more of the published SpatialDE
#'   genes and gave steadier scores (see benchmarks/RESULTS.md).
#' @param null `character(1)`: controls are drawn from a fitted
#'   zero-inflated negative binomial whose mean follows each spot's
#'   sequencing depth (`"zinb"`, the default, [simulateHomogeneous()]), or
#'   are the gene's own values shuffled over the spots (`"permutation"`,
#'   depth-adjusted, its exact marginal). Only the first stays calibrated
#'   when depth is itself spatial (most tissues); it is conservative when
#'   the noise is lighter-tailed than negative binomial.
#' @param variance `character(1)`: the variance the ZINB null is fitted to:
#'   `"local"` (default), each spot's difference to the mean of its 6 nearest
#'   neighbours scaled to independent spots -- the gene's noise without its
#'   pattern -- or `"marginal"`, the variance over all spots (for a
#'   patterned gene it includes the pattern, which compresses the score).
#' @param depth_aware `logical(1)`: controls keep each spot's library size.
#' @param draws `"depth"`, `integer(1)` or `NULL`: for a model that reads
#'   depth-matched draws (`runSIGEL(rarefy = "auto")`, the default), how many
#'   draws are averaged into each gene's and each control's vector.
#'   `"depth"` (default): as many as its counts hold (a gene `k` times deeper
#'   than the common depth is read `k` times, between the model's
#'   `rarefy_draws`, 4, and 8 times that), so the counts of deep genes are
#'   used rather than thinned away; a number: that many for every deep gene;
#'   `NULL`: the model's `rarefy_draws`. On the olfactory bulb the AUPRC
#'   against published SpatialDE calls was 0.24-0.28 with 4 draws and
#'   0.60 / 0.44 (two refits) with the defaults. Ignored by a model that
#'   reads whole images.
#' @param model `NULL`, or the trained model when `x` carries no results: an
#'   object returned by [runSIGEL()], a [SigelModel-class] or a saved model
#'   directory.
#' @param coords,library_size as in [runSIGEL()] (default: those used at fit).
#' @param seed `integer(1)`: seed of the simulation.
#' @param verbose `logical(1)`: progress bar.
#' @return For a `SingleCellExperiment`: `x` with `rowData(x)` columns
#'   `sigel_svg_score`, `sigel_svg_pval`, `sigel_svg_qval`, `sigel_svg_rank`
#'   (`NA` for untested genes) and the full table in
#'   `metadata(x)$sigel_svg`. For a `Seurat` object: feature meta data
#'   `sigel.svg.score`, ... and `x@tools$sigel_svg`. For a matrix: the
#'   `data.frame` (rownames genes; `score`, `pval`, `qval`, `rank`, `bin`,
#'   `mean`), ordered by rank.
#' @references Li et al. (2025) SIGEL: a context-aware genomic
#'   representation learning framework for spatial genomics analysis.
#'   Genome Biology 26:287.
#' @seealso [sigelCompareSVG()], [sigelSparkX()], [sigelMoransI()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     tot <- Matrix::rowSums(SummarizedExperiment::assay(sce))
#'     sce <- sce[order(-tot)[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     sce <- sigelSVG(sce, n_null = 5)
#'     head(S4Vectors::metadata(sce)$sigel_svg)
#' }
#' }
#' @export
sigelSVG <- function(x, n_null = 2L, n_bins = 10L, genes = NULL,
                     metric = c("cosine", "euclidean", "whitened"),
                     reference = c("level", "gene"),
                     null = c("zinb", "permutation"),
                     variance = c("local", "marginal"), depth_aware = TRUE,
                     draws = "depth",
                     model = NULL, coords = NULL, library_size = NULL,
                     seed = 0L, verbose = FALSE) {
    n_null <- .check_number(n_null, "n_null", min = 1, whole = TRUE)
    n_bins <- .check_number(n_bins, "n_bins", min = 1, whole = TRUE)
    draws <- .check_draws(draws)
    seed <- .check_seed(seed)
    metric <- match.arg(metric)
    reference <- .check_reference(reference, n_null)
    null <- match.arg(null)
    variance <- match.arg(variance)
    if (!is.null(genes) && (!is.character(genes) || !length(genes))) {
        stop("`genes` must be NULL or a non-empty character vector",
             call. = FALSE)
    }
    inp <- .task_inputs(x, model, coords, library_size)
    tab <- .py_call(.sigel_py()$tl$svg(
        inp$model, inp$ad, genes = if (is.null(genes)) NULL else as.list(genes),
        n_null = n_null, n_bins = n_bins, metric = metric,
        reference = reference,
        null = null,
        variance = variance, depth_aware = isTRUE(depth_aware), draws = draws,
        image_options = inp$opts,
        seed = seed, progress = isTRUE(verbose)), "sigelSVG")
    df <- .py_df(tab)
    .store_gene_table(x, df, c("score", "pval", "qval", "rank"), "sigel_svg",
                      "sigel_svg")
}

# ------------------------------------------------------- sigelPatternSearch

# an R template (one value per spot, or an image) -> numpy / pandas
.template_py <- function(template, spots) {
    np <- reticulate::import("numpy", convert = FALSE)
    pd <- reticulate::import("pandas", convert = FALSE)
    if (is.matrix(template)) {
        if (!is.numeric(template) && !is.logical(template)) {
            stop("an image `template` must be a numeric or logical matrix",
                 call. = FALSE)
        }
        return(np$asarray(reticulate::r_to_py(unname(template))))
    }
    if (!is.null(names(template))) {
        if (!all(spots %in% names(template))) {
            stop("`template` is named but misses ",
                 sum(!spots %in% names(template)), " spots of x",
                 call. = FALSE)
        }
        template <- template[spots]
    }
    if (length(template) != length(spots)) {
        stop("`template` has ", length(template), " values but x has ",
             length(spots), " spots", call. = FALSE)
    }
    if (anyNA(template)) stop("`template` contains NA", call. = FALSE)
    if (is.factor(template)) {
        return(pd$Categorical(as.list(as.character(template)),
                              categories = as.list(levels(template))))
    }
    if (is.character(template)) {
        return(np$array(as.list(template), dtype = "object"))
    }
    if (is.logical(template)) {
        return(np$array(as.list(template), dtype = "bool"))
    }
    if (is.numeric(template)) {
        return(np$asarray(reticulate::r_to_py(as.numeric(template)),
                          dtype = "float64"))
    }
    stop("unsupported `template` of class ", class(template)[1],
         call. = FALSE)
}

.targets_py <- function(v, name) {
    if (is.null(v)) return(NULL)
    if (!is.numeric(v) || is.null(names(v)) || any(!nzchar(names(v))) ||
        anyNA(v)) {
        stop("`", name, "` must be a named numeric vector (one value per ",
             "region)", call. = FALSE)
    }
    reticulate::dict(as.list(v))
}

#' Designated-pattern search
#'
#' Finds the genes whose spatial pattern resembles a designated template,
#' without reference genes: the template becomes simulated pseudo-genes
#' (negative binomial counts calibrated on the observed genes; see
#' [simulatePattern()]), which are embedded with the trained encoder; real
#' genes are ranked by their mean cosine similarity to the pseudo-genes.
#'
#' @inheritParams sigelSVG
#' @param template one value per spot (a factor/character of region labels,
#'   a logical mask, or a numeric pattern in \[0, 1\]; named vectors are
#'   matched to the spot names), or a numeric/logical matrix image.
#' @param quantiles named `numeric`: per-region quantiles of the observed
#'   genes' regional means (default for masks and patterns:
#'   `c(pattern = 0.9, background = 0.5)`).
#' @param means named `numeric`: explicit per-region mean counts instead.
#' @param taper `numeric(1)`: tapered region edges, in spot spacings.
#' @param n_draws `integer(1)`: pseudo-gene draws.
#' @param genes `character` or `NULL`: genes to rank (default: all embedded).
#' @param engine `character(1)`: simulator, `"numpy"` or `"r"`
#'   ([simulatePattern()] called back through rpy2).
#' @return A `data.frame` (rownames genes; `similarity`, `similarity_sd`,
#'   `rank`), ordered by rank; attribute `"pseudo_image"` is the mean
#'   pseudo-gene image (a matrix, `NA` off tissue).
#' @seealso [simulatePattern()], [plotGeneImages()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     tot <- Matrix::rowSums(SummarizedExperiment::assay(sce))
#'     sce <- sce[order(-tot)[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     y <- SummarizedExperiment::colData(sce)$y
#'     hits <- sigelPatternSearch(sce, y > stats::median(y), n_draws = 3)
#'     head(hits)
#' }
#' }
#' @export
sigelPatternSearch <- function(x, template, quantiles = NULL, means = NULL,
                               taper = 0, n_draws = 10L, genes = NULL,
                               engine = c("numpy", "r"), model = NULL,
                               coords = NULL, library_size = NULL,
                               seed = 0L) {
    n_draws <- .check_number(n_draws, "n_draws", min = 1, whole = TRUE)
    taper <- .check_number(taper, "taper", min = 0)
    seed <- .check_seed(seed)
    engine <- match.arg(engine)
    if (!is.null(quantiles) && !is.null(means)) {
        stop("give only one of `quantiles` and `means`", call. = FALSE)
    }
    if (!is.null(quantiles) && any(quantiles < 0 | quantiles > 1)) {
        stop("`quantiles` must lie in [0, 1]", call. = FALSE)
    }
    inp <- .task_inputs(x, model, coords, library_size)
    tpl <- .template_py(template, colnames(inp$parts$counts))
    tab <- .py_call(.sigel_py()$tl$pattern_search(
        inp$model, inp$ad, tpl, quantiles = .targets_py(quantiles, "quantiles"),
        means = .targets_py(means, "means"), taper = taper, n_draws = n_draws,
        genes = if (is.null(genes)) NULL else as.list(genes), engine = engine,
        image_options = inp$opts, seed = seed), "sigelPatternSearch")
    df <- .py_df(tab)
    img <- tryCatch({
        u <- inp$ad$uns$`__getitem__`("sigel_pattern_search")
        .py_matrix(u$`__getitem__`("pseudo_image"))
    }, error = function(e) NULL)
    attr(df, "pseudo_image") <- img
    df
}

# ---------------------------------------------------------- sigelCompareSVG

#' Compare SIGEL's spatially variable genes with SPARK-X-style and Moran's I
#'
#' Runs [sigelSVG()], the SPARK-X-style test ([sigelSparkX()], in R) and
#' Moran's I ([sigelMoransI()]) on the same genes and reports each method's
#' score and rank, pairwise Spearman correlations of the rankings and the
#' overlaps of their top-k lists.
#'
#' @inheritParams sigelSVG
#' @param top_k `integer`: sizes of the top lists to compare.
#' @param k `integer(1)`: neighbours of Moran's I graph.
#' @return A list: `table` (data.frame, rownames genes: `sigel_score`,
#'   `sigel_pval`, `sigel_qval`, `sigel_rank`, `sparkx_stat` (-log10 p),
#'   `sparkx_pval`, `sparkx_qval`, `sparkx_rank`, `moran_I`, `moran_pval`,
#'   `moran_qval`, `moran_rank`), `spearman` (3 x 3 matrix), `overlap`
#'   (data.frame: `k`, `method_a`, `method_b`, `overlap`, `fraction`) and
#'   `seconds` (run time per method).
#' @seealso [sigelSVG()], [sigelSparkX()], [sigelMoransI()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     tot <- Matrix::rowSums(SummarizedExperiment::assay(sce))
#'     sce <- sce[order(-tot)[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     cmp <- sigelCompareSVG(sce, n_null = 5, top_k = 10)
#'     cmp$spearman
#' }
#' }
#' @export
sigelCompareSVG <- function(x, n_null = 2L,
                            reference = c("level", "gene"),
                            null = c("zinb", "permutation"),
                            variance = c("local", "marginal"),
                            draws = "depth",
                            top_k = c(50L, 100L), k = 6L,
                            genes = NULL, model = NULL, coords = NULL,
                            library_size = NULL, seed = 0L, verbose = FALSE) {
    n_null <- .check_number(n_null, "n_null", min = 1, whole = TRUE)
    reference <- .check_reference(reference, n_null)
    null <- match.arg(null)
    variance <- match.arg(variance)
    draws <- .check_draws(draws)
    k <- .check_number(k, "k", min = 1, whole = TRUE)
    seed <- .check_seed(seed)
    if (!is.numeric(top_k) || !length(top_k) || any(top_k < 1)) {
        stop("`top_k` must be positive whole numbers", call. = FALSE)
    }
    inp <- .task_inputs(x, model, coords, library_size)
    secs <- c()
    t0 <- proc.time()[["elapsed"]]
    tab <- .py_call(.sigel_py()$tl$svg(
        inp$model, inp$ad, genes = if (is.null(genes)) NULL else as.list(genes),
        n_null = n_null, reference = reference, null = null,
        variance = variance,
        draws = draws, image_options = inp$opts, seed = seed,
        progress = isTRUE(verbose), key_added = "sigel_svg"),
        "sigelCompareSVG")
    sg <- .py_df(tab)
    secs["sigel"] <- proc.time()[["elapsed"]] - t0
    g <- rownames(sg)
    counts <- .as_dgc(inp$parts$counts)
    xy <- .parts_xy(inp$parts)
    lib <- inp$parts$library_size
    if (is.null(lib)) lib <- Matrix::colSums(counts)
    t0 <- proc.time()[["elapsed"]]
    sx <- sigelSparkX(counts[g, , drop = FALSE], xy)
    secs["sparkx"] <- proc.time()[["elapsed"]] - t0
    t0 <- proc.time()[["elapsed"]]
    mi <- sigelMoransI(counts[g, , drop = FALSE], xy, k = k,
                       library_size = lib)
    secs["moran"] <- proc.time()[["elapsed"]] - t0
    out <- data.frame(
        sigel_score = sg$score, sigel_pval = sg$pval, sigel_qval = sg$qval,
        sigel_rank = as.integer(sg$rank),
        sparkx_stat = -sx$log10_pval, sparkx_pval = sx$pval,
        sparkx_qval = sx$qval,
        sparkx_rank = rank(sx$log10_pval, ties.method = "first"),
        moran_I = mi$I, moran_pval = mi$pval, moran_qval = mi$qval,
        moran_rank = rank(-mi$I, ties.method = "first", na.last = TRUE),
        row.names = g)
    ranks <- out[, c("sigel_rank", "sparkx_rank", "moran_rank")]
    colnames(ranks) <- c("sigel", "sparkx", "moran")
    rho <- stats::cor(ranks, method = "spearman")
    ov <- do.call(rbind, lapply(top_k, function(kk) {
        kk <- min(as.integer(kk), nrow(ranks))
        pr <- utils::combn(colnames(ranks), 2L)
        do.call(rbind, lapply(seq_len(ncol(pr)), function(j) {
            a <- pr[1, j]
            b <- pr[2, j]
            o <- sum(ranks[[a]] <= kk & ranks[[b]] <= kk)
            data.frame(k = kk, method_a = a, method_b = b, overlap = o,
                       fraction = o / kk)
        }))
    }))
    list(table = out[order(out$sigel_rank), , drop = FALSE], spearman = rho,
         overlap = ov, seconds = secs)
}

# `reference` matched against its choices; the per-gene reference needs >= 2 controls
.check_reference <- function(reference, n_null) {
    reference <- match.arg(reference, c("level", "gene"))
    if (reference == "gene" && n_null < 2) {
        stop("`n_null` must be >= 2 with reference = \"gene\"", call. = FALSE)
    }
    reference
}

# `draws` of the SVG functions and of runSIGEL(model =): NULL, "depth" or a
# whole number >= 1
.check_draws <- function(draws) {
    if (identical(draws, "depth")) return(draws)
    if (is.character(draws)) {
        stop("`draws` must be NULL, \"depth\" or a whole number >= 1; got \"",
             paste(draws, collapse = "\", \""), "\"", call. = FALSE)
    }
    .check_number(draws, "draws", min = 1, whole = TRUE, null_ok = TRUE)
}
