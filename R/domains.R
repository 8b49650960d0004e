# Better spatial domains: prune redundant genes with the SIGEL embedding,
# then SpaGCN. Thin wrappers over sigel.tl.prune_genes / spatial_domains /
# domain_scores (python/sigel/tasks/domains.py).

# ------------------------------------------------------------- helpers

# The Python AnnData of the spots of `data`, read as runSIGEL() read them
# when `data` carries sigel results (same assay, coordinates, library size);
# explicit arguments win.
.domains_anndata <- function(data, assay = NULL, coords = NULL,
                             library_size = NULL) {
    res <- tryCatch(.sigel_results(data), error = function(e) NULL)
    if (inherits(data, "SigelResult")) {
        stop("a SigelResult holds no counts: pass the data as `data` (a ",
             "count matrix with `coords`, or the SingleCellExperiment / ",
             "Seurat object)", call. = FALSE)
    }
    p <- if (is.null(res)) list() else res$params
    if (is.null(assay)) assay <- .null_or(p$assay, "counts")
    if (is.null(coords) && !is.null(res)) coords <- .coords_arg(data, res)
    if (is.null(library_size) && !is.null(p$library_size)) {
        library_size <- .lib_arg(data, p$library_size)
    }
    .as_anndata(data, assay = assay, coords = coords,
                library_size = library_size, slot = p$slot, image = p$image)
}

# `genes` for sigelDomains(): NULL, names, a logical per gene, or the table
# of sigelPruneGenes() (its rownames)
.domain_genes <- function(genes, all_genes) {
    if (is.null(genes)) return(NULL)
    if (is.data.frame(genes)) genes <- rownames(genes)
    if (is.logical(genes)) {
        if (length(genes) != length(all_genes) || anyNA(genes)) {
            stop("a logical `genes` needs one TRUE/FALSE per gene (",
                 length(all_genes), ")", call. = FALSE)
        }
        genes <- all_genes[genes]
    }
    if (!is.character(genes) || anyNA(genes)) {
        stop("`genes` must be NULL, gene names, a logical vector or the ",
             "table returned by sigelPruneGenes()", call. = FALSE)
    }
    miss <- setdiff(genes, all_genes)
    if (length(miss)) {
        stop(length(miss), " of `genes` are not genes of x: ",
             .fmt_names(miss), call. = FALSE)
    }
    if (length(unique(genes)) < 2L) {
        stop("`genes` must name at least 2 genes", call. = FALSE)
    }
    unique(genes)
}

.gene_names <- function(x) {
    if (is.matrix(x) || methods::is(x, "Matrix") || is.data.frame(x) ||
        methods::is(x, "SummarizedExperiment")) return(rownames(x))
    if (.is_seurat(x)) return(rownames(x))
    NULL
}

# ---------------------------------------------------------- prune genes

#' Prune redundant genes with the SIGEL embedding
#'
#' Groups genes by embedding similarity (the model's hard contexts, or a
#' cosine-similarity threshold), scores every gene's spatial variability
#' (SIGEL's SVG score when available, else Moran's I), and keeps the top
#' `keep` members of each group; groups without any gene with spatial
#' signal are dropped (with `drop = "genes"`, so is every gene without
#' signal). The result is a lean gene set for spot clustering
#' with [sigelDomains()].
#'
#' @param x an object with SIGEL results (from [runSIGEL()]:
#'   `SingleCellExperiment`, `Seurat`, or a `SigelResult` together with
#'   `data`); or plain data together with `model`.
#' @param data the spots to score genes on (default `x`): a
#'   `SingleCellExperiment`, `Seurat` object or a count matrix (genes x
#'   spots, with `coords`).
#' @param model `NULL`, or the trained model when `x` is plain data (then
#'   scored as `data`): an object returned by [runSIGEL()], a
#'   [SigelModel-class] or a saved model directory. So
#'   `sigelPruneGenes(new_data, model = res)`.
#' @param keep `numeric(1)`: a fraction in (0, 1) of each group, or a whole
#'   number of genes per group.
#' @param score `character(1)`: `"auto"` (SVG score when the backend has
#'   it, else Moran's I), `"svg"` (slower: simulated controls per gene) or
#'   `"morans_i"`.
#' @param group_by `character(1)`: `"contexts"` or `"threshold"`.
#' @param threshold `numeric(1)`: cosine similarity for
#'   `group_by = "threshold"`.
#' @param linkage `character(1)`: `"average"`, `"single"` (connected
#'   components) or `"complete"`, for `group_by = "threshold"`.
#' @param alpha `numeric(1)` or `NULL`: a gene has spatial signal when its
#'   score's q-value is below `alpha`.
#' @param drop `character(1)`: `"groups"` drops the groups without any gene
#'   with signal and keeps the top `keep` of the others; `"genes"` in
#'   addition never keeps a gene without signal.
#' @param assay,coords,library_size how to read `data` (defaults: as
#'   [runSIGEL()] read it).
#' @param seed `integer(1)`: seed of the SVG simulations.
#' @return A `data.frame` of the selected genes (rownames), with columns
#'   `group`, `score`, `qval`, `rank` (1 = best of its group) and
#'   `group_size`; attributes `n_groups`, `n_groups_kept`, `score_method`.
#' @references Li et al. (2025) SIGEL: a context-aware genomic
#'   representation learning framework for spatial genomics analysis.
#'   Genome Biology 26:287.
#' @seealso [sigelDomains()], [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     sel <- sigelPruneGenes(sce, keep = 0.3, score = "morans_i")
#'     head(sel)
#' }
#' }
#' @export
sigelPruneGenes <- function(x, data = NULL, keep = 0.5,
                            score = c("auto", "svg", "morans_i"),
                            group_by = c("contexts", "threshold"),
                            threshold = 0.9,
                            linkage = c("average", "single", "complete"),
                            alpha = 0.05, drop = c("groups", "genes"),
                            assay = NULL, coords = NULL,
                            library_size = NULL, seed = 0L, model = NULL) {
    if (is.null(data)) data <- x
    if (!is.null(model)) x <- model
    score <- match.arg(score)
    group_by <- match.arg(group_by)
    linkage <- match.arg(linkage)
    drop <- match.arg(drop)
    keep <- .check_number(keep, "keep", min = 1e-12)
    if (keep > 1 && abs(keep - round(keep)) > 1e-8) {
        stop("`keep` must be a fraction in (0, 1) or a whole number >= 1; ",
             "got ", keep, call. = FALSE)
    }
    keep_py <- if (keep >= 1) as.integer(round(keep)) else keep
    threshold <- .check_number(threshold, "threshold", min = -1, max = 1)
    alpha <- .check_number(alpha, "alpha", min = 0, max = 1,
                           null_ok = TRUE)
    seed <- .check_seed(seed)
    model <- .sigel_model_py(x)
    ad <- .domains_anndata(data, assay = assay, coords = coords,
                           library_size = library_size)
    tl <- .sigel_py()$tl
    res <- .py_call(tl$prune_genes(
        model, ad, keep = keep_py, score = score, group_by = group_by,
        threshold = threshold, linkage = linkage, alpha = alpha,
        drop = drop, seed = seed), "sigelPruneGenes")
    out <- .py_df(res)
    attrs <- reticulate::py_to_r(res$attrs)
    for (a in c("n_groups", "n_groups_kept", "score_method")) {
        attr(out, a) <- attrs[[a]]
    }
    out
}

# -------------------------------------------------------------- domains

#' Spatial domains with SpaGCN
#'
#' Runs SpaGCN (1.2.7, through the Python backend) on a chosen gene set
#' (for example the genes kept by [sigelPruneGenes()]): counts are library
#' size normalised and log-transformed, the spot graph comes from the
#' coordinates (no histology), the length scale and the Louvain resolution
#' are searched so that SpaGCN finds `n_domains` domains, and the labels are
#' refined by a neighbourhood majority (hexagonal on Visium, square on
#' grids).
#'
#' @param x a `SingleCellExperiment`, `Seurat` object, or a count matrix
#'   (genes x spots, with `coords`).
#' @param genes `NULL` (all genes), gene names, a logical vector (one per
#'   gene) or the `data.frame` returned by [sigelPruneGenes()].
#' @param n_domains `integer(1)`: number of domains.
#' @param seed `integer(1)`: seeds SpaGCN (same seed, same labels).
#' @param assay,coords,library_size how to read `x` (defaults: as
#'   [runSIGEL()] read it, when `x` carries SIGEL results).
#' @param truth `NULL` or `character(1)`: a `colData` / meta.data column (or
#'   a vector, one value per spot) with known domains; the ARI / NMI are
#'   then attached as attribute `scores` (spots with `NA` truth ignored).
#' @param max_epochs `integer(1)`: SpaGCN training epochs.
#' @param n_threads `integer(1)` or `NULL`: cap on CPU threads.
#' @param key `character(1)`: column name of the labels (`key` and
#'   `paste0(key, "_refined")`).
#' @return For a `SingleCellExperiment`: `x` with factor columns
#'   `colData(x)[[key]]` and `colData(x)[[paste0(key, "_refined")]]`; for
#'   `Seurat`: the same columns in the meta.data; for a matrix: a
#'   `data.frame` (spot rownames) with columns `domain` and
#'   `domain_refined`. With `truth`, attribute `scores`: a `data.frame` of
#'   `ari`, `nmi`, `n_spots` for raw and refined labels.
#' @references Hu et al. (2021) SpaGCN: Integrating gene expression, spatial
#'   location and histology to identify spatial domains and spatially
#'   variable genes by graph convolutional network. Nature Methods
#'   18:1342-1351. Li et al. (2025) Genome Biology 26:287.
#' @seealso [sigelPruneGenes()], [sigelDomainScores()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60], ]
#'     sce <- sigelDomains(sce, n_domains = 4, max_epochs = 20, n_threads = 1)
#'     table(sce$sigel_domain_refined)
#' }
#' }
#' @export
sigelDomains <- function(x, genes = NULL, n_domains = 7L, seed = 0L,
                         assay = NULL, coords = NULL, library_size = NULL,
                         truth = NULL, max_epochs = 200L, n_threads = NULL,
                         key = "sigel_domain") {
    n_domains <- .check_number(n_domains, "n_domains", min = 2, whole = TRUE)
    seed <- .check_seed(seed)
    max_epochs <- .check_number(max_epochs, "max_epochs", min = 1, whole = TRUE)
    n_threads <- .check_number(n_threads, "n_threads", min = 1, whole = TRUE,
                               null_ok = TRUE)
    if (!is.character(key) || length(key) != 1L || !nzchar(key)) {
        stop("`key` must be one non-empty column name", call. = FALSE)
    }
    all_genes <- .gene_names(x)
    genes <- .domain_genes(genes, all_genes)
    if (!is.null(genes) && .is_seurat(x)) genes <- gsub("_", "-", genes)
    tr <- .truth_arg(x, truth)
    ad <- .domains_anndata(x, assay = assay, coords = coords,
                           library_size = library_size)
    lib_key <- if (reticulate::py_to_r(
        ad$obs$columns$`__contains__`("sigel_library_size")))
        "sigel_library_size" else NULL
    tl <- .sigel_py()$tl
    res <- .py_call(tl$spatial_domains(
        ad, if (is.null(genes)) NULL else as.list(genes),
        n_domains = n_domains, seed = seed, library_size_key = lib_key,
        max_epochs = max_epochs, n_threads = n_threads),
        "sigelDomains")
    df <- .py_df(res)
    lab <- data.frame(
        domain = factor(as.character(df$domain)),
        domain_refined = factor(as.character(df$domain_refined)),
        row.names = rownames(df))
    scores <- if (is.null(tr)) NULL else sigelDomainScores(lab, tr)
    if (methods::is(x, "SummarizedExperiment")) {
        lab <- lab[colnames(x), , drop = FALSE]
        SummarizedExperiment::colData(x)[[key]] <- lab$domain
        SummarizedExperiment::colData(x)[[paste0(key, "_refined")]] <-
            lab$domain_refined
    } else if (.is_seurat(x)) {
        lab <- lab[colnames(x), , drop = FALSE]
        x[[key]] <- lab$domain
        x[[paste0(key, "_refined")]] <- lab$domain_refined
    } else {
        x <- lab
    }
    if (!is.null(scores)) attr(x, "scores") <- scores
    x
}

# truth labels: NULL, a column of colData / meta.data, or a vector
.truth_arg <- function(x, truth) {
    if (is.null(truth)) return(NULL)
    n <- ncol(x)
    if (is.character(truth) && length(truth) == 1L && n != 1L) {
        cd <- if (methods::is(x, "SummarizedExperiment"))
            SummarizedExperiment::colData(x) else if (.is_seurat(x)) x[[]]
            else NULL
        if (is.null(cd) || !truth %in% colnames(cd)) {
            stop("`truth` column \"", truth, "\" not found in the spot ",
                 "annotations of x", call. = FALSE)
        }
        return(as.character(cd[[truth]]))
    }
    if (length(truth) != n) {
        stop("`truth` must be a column name or have one value per spot (",
             n, "); got ", length(truth), call. = FALSE)
    }
    as.character(truth)
}

#' Agreement of spatial domains with known labels
#'
#' Adjusted Rand index (ARI) and normalised mutual information (NMI) of
#' each label set against a ground truth; spots whose truth is `NA` are
#' left out.
#'
#' @param labels a vector of labels, or a `data.frame` of label columns (one
#'   row of scores per column).
#' @param truth a vector of known labels, one per spot (`NA` = unknown).
#' @return A `data.frame` with one row per label set and columns `ari`,
#'   `nmi` and `n_spots`.
#' @seealso [sigelDomains()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sigelDomainScores(c(1, 1, 2, 2, 3), c("a", "a", "b", "b", NA))
#' }
#' }
#' @export
sigelDomainScores <- function(labels, truth) {
    lab <- if (is.data.frame(labels)) labels else
        data.frame(labels = as.character(labels))
    if (nrow(lab) != length(truth)) {
        stop("`labels` has ", nrow(lab), " entries but `truth` has ",
             length(truth), call. = FALSE)
    }
    pd <- reticulate::import("pandas", convert = FALSE)
    cols <- lapply(lab, function(v) as.list(as.character(v)))
    plab <- pd$DataFrame(reticulate::dict(cols))
    tv <- as.character(truth)
    ptr <- pd$Series(lapply(tv, function(v) if (is.na(v)) NULL else v),
                     dtype = "object")
    res <- .py_call(.sigel_py()$tl$domain_scores(plab, ptr),
                    "sigelDomainScores")
    .py_df(res)
}
