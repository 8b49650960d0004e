# Contexts and gene-gene relations on the gene embedding: neighbours,
# gene-set enrichment, interaction prediction, per-spot context scores.
# Thin wrappers: check inputs in R, call the Python task cores
# (sigel.tl.*), return data.frames / matrices.

# ------------------------------------------------------------- helpers

# the embedding (genes x D matrix with gene rownames) of x
.emb_matrix <- function(x) {
    if (is.matrix(x) || is.data.frame(x)) {
        m <- as.matrix(x)
        if (!is.numeric(m)) stop("`x` must be a numeric matrix (genes x D)",
                                 call. = FALSE)
        if (is.null(rownames(m)) || anyDuplicated(rownames(m))) {
            stop("the embedding matrix `x` needs unique gene rownames",
                 call. = FALSE)
        }
        if (nrow(m) < 2L) stop("`x` must have at least 2 genes",
                               call. = FALSE)
        if (any(!is.finite(m))) stop("`x` has NA or infinite values",
                                     call. = FALSE)
        return(m)
    }
    sigelEmbeddings(x)
}

# R matrix (genes x D) -> pandas DataFrame indexed by gene
.emb_py <- function(m) {
    pd <- reticulate::import("pandas", convert = FALSE)
    np <- reticulate::import("numpy", convert = FALSE)
    arr <- np$asarray(reticulate::r_to_py(unname(m)), dtype = "float64")
    pd$DataFrame(arr, index = as.list(rownames(m)))
}

# feature metadata (rowData / Seurat meta.features) of x, or NULL
.feature_meta <- function(x) {
    if (methods::is(x, "SummarizedExperiment")) {
        return(as.data.frame(SummarizedExperiment::rowData(x)))
    }
    if (.is_seurat(x)) {
        a <- x[[SeuratObject::DefaultAssay(x)]]
        return(a[[]])
    }
    NULL
}

#' Resolve `gene_symbols` to a named character vector id -> symbol (or NULL)
#' @keywords internal
#' @noRd
.symbol_map <- function(x, gene_symbols, ids) {
    if (is.null(gene_symbols)) return(NULL)
    if (is.character(gene_symbols) && length(gene_symbols) == 1L &&
        is.null(names(gene_symbols))) {
        meta <- .feature_meta(x)
        if (is.null(meta)) {
            stop("`gene_symbols` = \"", gene_symbols, "\" names a feature ",
                 "metadata column, but x has none; pass a named character ",
                 "vector c(id = symbol)", call. = FALSE)
        }
        if (!gene_symbols %in% colnames(meta)) {
            stop("`gene_symbols` column \"", gene_symbols, "\" not in the ",
                 "feature metadata; available: ",
                 .fmt_names(colnames(meta), 15), call. = FALSE)
        }
        sym <- stats::setNames(as.character(meta[[gene_symbols]]),
                               rownames(meta))
    } else if (is.character(gene_symbols) && !is.null(names(gene_symbols))) {
        sym <- gene_symbols
    } else {
        stop("`gene_symbols` must be NULL, a feature metadata column name ",
             "or a named character vector c(id = symbol)", call. = FALSE)
    }
    sym <- sym[ids]
    names(sym) <- ids
    sym[!is.na(sym) & nzchar(sym)]
}

# named character vector -> pandas Series (id -> symbol), or NULL
.symbols_py <- function(sym) {
    if (is.null(sym)) return(NULL)
    pd <- reticulate::import("pandas", convert = FALSE)
    pd$Series(as.list(unname(sym)), index = as.list(names(sym)),
              dtype = "object")
}

# pairs (data.frame / 2-column matrix) -> list(a, b, label)
.pairs_arg <- function(pairs, labels = NULL, name = "pairs") {
    if (is.matrix(pairs)) pairs <- as.data.frame(pairs,
                                                 stringsAsFactors = FALSE)
    if (!is.data.frame(pairs) || ncol(pairs) < 2L) {
        stop("`", name, "` must be a data.frame or matrix whose first two ",
             "columns are genes", call. = FALSE)
    }
    lab <- labels
    if (is.null(lab) && "label" %in% colnames(pairs)) lab <- pairs$label
    if (!is.null(lab)) {
        if (is.logical(lab)) lab <- as.integer(lab)
        if (length(lab) != nrow(pairs) || anyNA(lab) ||
            !all(lab %in% c(0, 1))) {
            stop("labels of `", name, "` must be 0/1 (or TRUE/FALSE), one ",
                 "per pair", call. = FALSE)
        }
    }
    list(a = as.character(pairs[[1]]), b = as.character(pairs[[2]]),
         label = if (is.null(lab)) NULL else as.integer(lab))
}

.pairs_py <- function(p) {
    pd <- reticulate::import("pandas", convert = FALSE)
    d <- list(gene_a = as.list(p$a), gene_b = as.list(p$b))
    if (!is.null(p$label)) d$label <- as.list(p$label)
    pd$DataFrame(d)
}

# ------------------------------------------------------------ neighbours

#' Nearest genes in the SIGEL embedding
#'
#' For each query gene, the `k` genes whose embedding vectors are most
#' similar (cosine): co-expression retrieval by spatial pattern. Queries are
#' processed in batches, so the genes x genes similarity matrix is never
#' formed.
#'
#' @param x an object with SIGEL results (from [runSIGEL()]:
#'   `SingleCellExperiment`, `Seurat`, `SigelResult`) or a numeric matrix of
#'   gene embeddings (genes x D, gene rownames).
#' @param genes `character` or `NULL`: query genes (row names of x, or
#'   symbols with `gene_symbols`); `NULL` queries every gene.
#' @param k `integer(1)`: neighbours per query.
#' @param gene_symbols `NULL`, `character(1)` naming a `rowData()` (or
#'   Seurat meta.features) column with symbols, or a named character vector
#'   `c(id = symbol)`. Queries may then be symbols (e.g. when row names are
#'   Ensembl IDs) and the result gains symbol columns.
#' @param include_self `logical(1)`: keep the query in its own list.
#' @param center `logical(1)`: remove the mean gene vector before taking
#'   cosines (default; raw cosines of SIGEL vectors all sit near 1, and the
#'   model's contrastive refinement works on centred vectors).
#' @param model `NULL`, or the embeddings' source when it is not `x`: an
#'   object returned by [runSIGEL()], a [SigelModel-class] or a saved model
#'   directory (`x` then only supplies `gene_symbols`).
#' @return A `data.frame` with columns `query`, `neighbor`, `cosine`, `rank`
#'   (1 = most similar) and, with `gene_symbols`, `query_symbol`,
#'   `neighbor_symbol`. Attribute `n_unmapped`: query names that matched no
#'   embedded gene (skipped with a warning).
#' @references Li et al. (2025) SIGEL: a context-aware genomic
#'   representation learning framework for spatial genomics analysis.
#'   Genome Biology 26:287.
#' @seealso [runSIGEL()], [sigelEnrichment()], [sigelInteractions()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     emb <- matrix(rnorm(200), 50, 4,
#'                   dimnames = list(paste0("g", 1:50), NULL))
#'     sigelNeighbors(emb, c("g1", "g2"), k = 3)
#' }
#' }
#' @export
sigelNeighbors <- function(x, genes = NULL, k = 10L, gene_symbols = NULL,
                           include_self = FALSE, center = TRUE,
                           model = NULL) {
    emb <- .emb_matrix(if (is.null(model)) x else model)
    k <- .check_number(k, "k", min = 1, whole = TRUE)
    if (!is.null(genes) && (!is.character(genes) || !length(genes))) {
        stop("`genes` must be NULL or a non-empty character vector",
             call. = FALSE)
    }
    sym <- .symbol_map(x, gene_symbols, rownames(emb))
    tl <- .sigel_py()$tl
    res <- .py_call(tl$neighbors(
        .emb_py(emb), if (is.null(genes)) NULL else as.list(genes), k,
        gene_symbols = .symbols_py(sym),
        include_self = isTRUE(include_self), center = isTRUE(center)),
        "sigelNeighbors")
    out <- .py_df(res)
    rownames(out) <- NULL
    attr(out, "n_unmapped") <- reticulate::py_to_r(res$attrs$get(
        "n_unmapped", 0L))
    out
}

# ------------------------------------------------------------- enrichment

# GO gene sets of an OrgDb (propagated: GOALL), for the given keys
.go_sets <- function(OrgDb, ont, keys, keytype) {
    if (!requireNamespace("AnnotationDbi", quietly = TRUE)) {
        stop("GO gene sets need the AnnotationDbi package", call. = FALSE)
    }
    if (is.character(OrgDb)) {
        if (!requireNamespace(OrgDb, quietly = TRUE)) {
            stop("OrgDb package ", OrgDb, " is not installed", call. = FALSE)
        }
        OrgDb <- getExportedValue(OrgDb, OrgDb)
    }
    keys <- intersect(unique(keys), AnnotationDbi::keys(OrgDb, keytype))
    if (!length(keys)) {
        stop("no gene matches keytype ", keytype, " of the OrgDb",
             call. = FALSE)
    }
    tab <- suppressMessages(AnnotationDbi::select(
        OrgDb, keys = keys, keytype = keytype,
        columns = c("GOALL", "ONTOLOGYALL")))
    tab <- tab[!is.na(tab$GOALL) & tab$ONTOLOGYALL == ont, , drop = FALSE]
    lapply(split(tab[[keytype]], tab$GOALL), unique)
}

# gene sets argument -> Python object (GMT path list or dict)
.gene_sets_py <- function(gene_sets) {
    if (is.character(gene_sets) && is.null(names(gene_sets))) {
        miss <- gene_sets[!file.exists(gene_sets)]
        if (length(miss)) stop("GMT file(s) not found: ",
                               .fmt_names(miss, 5), call. = FALSE)
        return(as.list(normalizePath(gene_sets)))
    }
    if (is.list(gene_sets) && !is.null(names(gene_sets)) &&
        all(nzchar(names(gene_sets)))) {
        return(reticulate::r_to_py(lapply(gene_sets, function(g)
            as.list(as.character(g)))))
    }
    stop("`gene_sets` must be GMT file path(s) or a named list of ",
         "character vectors (or NULL with `OrgDb`)", call. = FALSE)
}

# groups argument -> Python (None, dict gene -> group, or DataFrame)
.groups_py <- function(x, groups, resolutions) {
    if (!is.null(resolutions)) return(NULL)
    if (is.null(groups)) {
        if (is.matrix(x) || is.data.frame(x)) {
            stop("an embedding matrix carries no contexts: pass `groups` ",
                 "or `resolutions`", call. = FALSE)
        }
        ctx <- sigelContexts(x)
        groups <- stats::setNames(paste0("context_", ctx$context),
                                  rownames(ctx))
    }
    if (is.data.frame(groups)) {
        if (is.null(rownames(groups))) stop("`groups` data.frame needs gene ",
                                            "rownames", call. = FALSE)
        pd <- reticulate::import("pandas", convert = FALSE)
        cols <- lapply(groups, function(v) as.list(as.character(v)))
        return(pd$DataFrame(cols, index = as.list(rownames(groups))))
    }
    if (is.list(groups) && !is.null(names(groups))) {
        # group -> genes
        return(reticulate::r_to_py(lapply(groups, function(g)
            as.list(as.character(g)))))
    }
    if (is.atomic(groups) && !is.null(names(groups))) {
        pd <- reticulate::import("pandas", convert = FALSE)
        return(pd$Series(as.list(as.character(groups)),
                         index = as.list(names(groups)), name = "groups"))
    }
    stop("`groups` must be NULL (contexts), a named vector gene -> group, ",
         "a named list group -> genes or a data.frame genes x groupings",
         call. = FALSE)
}

#' Gene-set enrichment of SIGEL contexts (or any gene grouping)
#'
#' One-sided hypergeometric test of every (group, gene set) pair sharing at
#' least one gene, with Benjamini-Hochberg correction; the universe is the
#' set of embedded genes. Groups are the SIGEL contexts by default, any gene
#' grouping you give, or clusterings of the embedding at several
#' resolutions.
#'
#' @inheritParams sigelNeighbors
#' @param gene_sets GMT file path(s) (`.gmt` / `.gmt.gz`) or a named list of
#'   character vectors; or `NULL` with `OrgDb` to use the GO ontology `ont`
#'   (propagated annotations, `GOALL`) of that OrgDb.
#' @param groups `NULL` (the contexts of x), a named vector gene -> group, a
#'   named list group -> genes, or a data.frame genes x groupings (one column
#'   per resolution).
#' @param resolutions `integer` or `NULL`: instead of `groups`, cluster the
#'   embedding into this many clusters (each value one resolution) and test
#'   each clustering.
#' @param OrgDb an OrgDb object or package name (e.g. `"org.Hs.eg.db"`) for
#'   GO gene sets.
#' @param ont `character(1)`: `"BP"`, `"MF"` or `"CC"` (with `OrgDb`).
#' @param min_size,max_size `integer(1)`: test only sets with this many
#'   genes in the universe.
#' @param min_group_size `integer(1)`: leave out groups (contexts, clusters)
#'   with fewer genes than this (their "enrichment" rests on one or two
#'   genes); with `fdr_scope = "all"` the q-values are taken over the tests
#'   that remain.
#' @param model `NULL`, or an object with SIGEL results / a [SigelModel-class]
#'   / a saved model directory whose embeddings (and contexts) to use instead
#'   of those of `x`; `x` then only supplies `gene_symbols`.
#' @param fdr_scope `"group"` (BH within each group: one enrichment analysis
#'   per context) or `"all"` (across all tests of a grouping).
#' @param cluster_method `"kmeans"` (cosine k-means) or `"mixture"` (SIGEL's
#'   Student's t mixture refitted at each K), for `resolutions`.
#' @param seed `integer(1)`: seed of the clustering.
#' @return A `data.frame`, one row per tested (grouping, group, set):
#'   `resolution`, `context`, `set`, `overlap`, `set_size`, `group_size`,
#'   `expected`, `fold`, `p`, `q`, `genes` (shared genes, comma-separated;
#'   symbols with `gene_symbols`) and, for GO identifiers when GO.db is
#'   installed, `description`. Attributes: `universe_size`,
#'   `n_genes_without_symbol`, `n_set_genes_unmapped`,
#'   `n_groups_below_min_size`.
#' @references Li et al. (2025) Genome Biology 26:287.
#' @seealso [sigelNeighbors()], [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     emb <- matrix(rnorm(240), 60, 4,
#'                   dimnames = list(paste0("g", 1:60), NULL))
#'     groups <- setNames(rep(c("a", "b"), c(20, 40)), rownames(emb))
#'     sets <- list(first = paste0("g", 1:20), other = paste0("g", 30:45))
#'     sigelEnrichment(emb, sets, groups = groups)
#' }
#' }
#' @export
sigelEnrichment <- function(x, gene_sets = NULL, groups = NULL,
                            resolutions = NULL, gene_symbols = NULL,
                            OrgDb = NULL, ont = c("BP", "MF", "CC"),
                            min_size = 5L, max_size = 500L,
                            min_group_size = 5L,
                            fdr_scope = c("group", "all"),
                            cluster_method = c("kmeans", "mixture"),
                            seed = 0L, model = NULL) {
    ont <- match.arg(ont)
    fdr_scope <- match.arg(fdr_scope)
    cluster_method <- match.arg(cluster_method)
    min_size <- .check_number(min_size, "min_size", min = 1, whole = TRUE)
    max_size <- .check_number(max_size, "max_size", min = 1, whole = TRUE)
    min_group_size <- .check_number(min_group_size, "min_group_size",
                                    min = 1, whole = TRUE)
    seed <- .check_seed(seed)
    src <- if (is.null(model)) x else model
    if (!is.null(groups) && !is.null(resolutions)) {
        stop("give either `groups` or `resolutions`, not both", call. = FALSE)
    }
    if (!is.null(resolutions)) {
        resolutions <- vapply(resolutions, .check_number, integer(1),
                              name = "resolutions", min = 2, whole = TRUE)
    }
    emb <- .emb_matrix(src)
    sym <- .symbol_map(x, gene_symbols, rownames(emb))
    if (is.null(gene_sets)) {
        if (is.null(OrgDb)) {
            stop("give `gene_sets` (GMT paths or a named list) or `OrgDb`",
                 call. = FALSE)
        }
        if (!is.null(sym)) {
            keys <- unname(sym)
            keytype <- "SYMBOL"
        } else {
            keys <- rownames(emb)
            keytype <- if (mean(grepl("^ENS", keys)) > 0.5) "ENSEMBL" else
                "SYMBOL"
        }
        gene_sets <- .go_sets(OrgDb, ont, keys, keytype)
    }
    tl <- .sigel_py()$tl
    res <- .py_call(tl$enrichment(
        .emb_py(emb), .gene_sets_py(gene_sets),
        .groups_py(src, groups, resolutions),
        resolutions = if (is.null(resolutions)) NULL else
            as.list(resolutions),
        cluster_method = cluster_method, gene_symbols = .symbols_py(sym),
        min_size = min_size, max_size = max_size, fdr_scope = fdr_scope,
        seed = seed), "sigelEnrichment")
    out <- .py_df(res)
    rownames(out) <- NULL
    out <- .drop_small_groups(out, min_group_size, fdr_scope)
    if (nrow(out) && all(grepl("^GO:", out$set)) &&
        requireNamespace("GO.db", quietly = TRUE) &&
        requireNamespace("AnnotationDbi", quietly = TRUE)) {
        ids <- unique(out$set)
        term <- suppressMessages(AnnotationDbi::select(
            GO.db::GO.db, keys = ids, keytype = "GOID", columns = "TERM"))
        out$description <- term$TERM[match(out$set, term$GOID)]
    }
    at <- reticulate::py_to_r(res$attrs)
    for (nm in c("universe_size", "n_genes_without_symbol",
                 "n_set_genes_unmapped")) attr(out, nm) <- at[[nm]]
    out
}

# Enrichment rows of groups (contexts, clusters) with fewer than `min_size`
# genes are dropped: a 1-2 gene group "enriched" for a set says nothing.
# With fdr_scope = "all" the q-values are recomputed (BH) over the tests that
# remain in each grouping; with "group" they are per group and unchanged.
.drop_small_groups <- function(out, min_size, fdr_scope) {
    if (!nrow(out) || !"group_size" %in% colnames(out)) return(out)
    small <- out$group_size < min_size
    n_groups <- length(unique(paste(out$resolution, out$context)[small]))
    out <- out[!small, , drop = FALSE]
    if (identical(fdr_scope, "all") && nrow(out)) {
        out$q <- stats::ave(out$p, out$resolution,
                            FUN = function(p) stats::p.adjust(p, "BH"))
    }
    rownames(out) <- NULL
    attr(out, "n_groups_below_min_size") <- n_groups
    out
}

# ----------------------------------------------------------- interactions

#' Predict gene-gene interactions from the SIGEL embedding
#'
#' Builds symmetric features of gene pairs from their (unit-length)
#' vectors, `[u * v, |u - v|]` by default, and fits a logistic regression
#' and a small MLP (scikit-learn) on labelled pairs. Reports stratified
#' cross-validated AUROC / AUPRC, and the same with random vectors of equal
#' dimension (seeded) as the control. Optionally scores new pairs and
#' returns the predicted interaction strength among a gene list.
#'
#' @inheritParams sigelNeighbors
#' @param pairs `data.frame` or matrix: first two columns are genes; a
#'   `label` column (0/1) is used when `labels` is `NULL`.
#' @param labels `integer`/`logical` or `NULL`: one label per pair.
#' @param new_pairs pairs to score (same format, labels not needed), or
#'   `NULL`.
#' @param genes `character` or `NULL`: genes whose pairwise predicted
#'   interaction strength is returned as a matrix.
#' @param classifiers any of `"logistic"`, `"mlp"`.
#' @param model `NULL`, or the embeddings' source when it is not `x` (see
#'   [sigelNeighbors()]).
#' @param predict_with `character(1)`: the classifier used for `new_pairs`
#'   and `genes` (fitted on all labelled pairs).
#' @param features `"product_absdiff"` (`[u*v, |u-v|]`), `"sum_product"`
#'   (`[u+v, u*v]`) or `"product"`.
#' @param n_splits `integer(1)`: cross-validation folds (0 = none).
#' @param control `logical(1)`: also evaluate random vectors.
#' @param test_pairs optional held-out labelled pairs (same format).
#' @param seed `integer(1)`: seeds folds, MLP and random vectors.
#' @return A list: `metrics` (`data.frame`: `embedding` (`"sigel"` or
#'   `"random"`), `classifier`, `split` (`"cv"` / `"test"`), `auroc`,
#'   `auprc`, `auroc_sd`, `auprc_sd`, `n_pairs`, `n_positive`), `predictions`
#'   (`data.frame` `gene_a`, `gene_b`, `score`, or `NULL`) and `strength`
#'   (genes x genes matrix, or `NULL`).
#' @references Li et al. (2025) Genome Biology 26:287.
#' @seealso [sigelNeighbors()], [sigelGOSimilarity()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     set.seed(1)
#'     fam <- rep(1:3, each = 20)
#'     emb <- matrix(rnorm(18), 3)[fam, ] + 0.3 * rnorm(360)
#'     rownames(emb) <- paste0("g", 1:60)
#'     ij <- t(combn(60, 2))[sample(1770, 300), ]
#'     pairs <- data.frame(a = rownames(emb)[ij[, 1]],
#'                         b = rownames(emb)[ij[, 2]],
#'                         label = as.integer(fam[ij[, 1]] == fam[ij[, 2]]))
#'     res <- sigelInteractions(emb, pairs, classifiers = "logistic",
#'                              genes = c("g1", "g2", "g30"))
#'     res$metrics
#'     res$strength
#' }
#' }
#' @export
sigelInteractions <- function(x, pairs, labels = NULL, new_pairs = NULL,
                              genes = NULL,
                              classifiers = c("logistic", "mlp"),
                              predict_with = "logistic",
                              features = c("product_absdiff", "sum_product",
                                           "product"),
                              n_splits = 5L, control = TRUE,
                              test_pairs = NULL, gene_symbols = NULL,
                              seed = 0L, model = NULL) {
    classifiers <- match.arg(classifiers, several.ok = TRUE)
    predict_with <- match.arg(predict_with, c("logistic", "mlp"))
    features <- match.arg(features)
    n_splits <- .check_number(n_splits, "n_splits", min = 0, whole = TRUE)
    seed <- .check_seed(seed)
    p <- .pairs_arg(pairs, labels)
    if (is.null(p$label)) stop("`pairs` need labels (`labels` or a `label` ",
                               "column)", call. = FALSE)
    tp <- if (is.null(test_pairs)) NULL else .pairs_arg(test_pairs, NULL,
                                                       "test_pairs")
    if (!is.null(tp) && is.null(tp$label)) {
        stop("`test_pairs` need a `label` column", call. = FALSE)
    }
    emb <- .emb_matrix(if (is.null(model)) x else model)
    sym <- .symbol_map(x, gene_symbols, rownames(emb))
    tl <- .sigel_py()$tl
    emb_py <- .emb_py(emb)
    sym_py <- .symbols_py(sym)
    met <- .py_call(tl$interactions(
        emb_py, .pairs_py(p), classifiers = as.list(classifiers),
        features = features, n_splits = n_splits, control = isTRUE(control),
        test_pairs = if (is.null(tp)) NULL else .pairs_py(tp),
        gene_symbols = sym_py, seed = seed), "sigelInteractions")
    out <- list(metrics = .py_df(met), predictions = NULL, strength = NULL)
    rownames(out$metrics) <- NULL
    if (!is.null(new_pairs) || !is.null(genes)) {
        pred <- .py_call(tl$fit_interactions(
            emb_py, .pairs_py(p), classifier = predict_with,
            features = features, gene_symbols = sym_py, seed = seed),
            "sigelInteractions")
        if (!is.null(new_pairs)) {
            np_ <- .pairs_arg(new_pairs, NULL, "new_pairs")
            np_$label <- NULL
            out$predictions <- .py_df(pred$predict(.pairs_py(np_)))
            rownames(out$predictions) <- NULL
        }
        if (!is.null(genes)) {
            out$strength <- .py_df_matrix(pred$strength(as.list(
                as.character(genes))))
        }
    }
    out
}

# --------------------------------------------------------- context scores

#' Per-spot SIGEL context scores
#'
#' For every spot and context, the membership-weighted mean of the
#' context's genes' normalised expression (the values SIGEL trained on:
#' library-size normalised, log1p, scaled per gene to \[0, 1\]). The
#' spot-level counterpart of the context maps drawn by [plotContexts()];
#' store it as a reduced dimension to plot or cluster spots by context.
#'
#' @param x an object with SIGEL results from [runSIGEL()]
#'   (`SingleCellExperiment`, `Seurat`; or a `SigelResult` in the session
#'   that fitted it).
#' @param contexts `NULL` (all) or context names / 0-based integers.
#' @param min_membership `numeric(1)`: memberships below this count as 0.
#' @return A numeric matrix, spots x contexts (columns `context_0`, ...).
#'   Store it with `reducedDim(x, "sigel_contexts") <- ` (SCE) or as a
#'   Seurat `DimReduc`.
#' @references Li et al. (2025) Genome Biology 26:287.
#' @seealso [runSIGEL()], [plotContexts()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SingleCellExperiment::counts(sce)))[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     sc <- sigelContextScores(sce)
#'     SingleCellExperiment::reducedDim(sce, "sigel_contexts") <- sc
#'     head(sc)
#' }
#' }
#' @export
sigelContextScores <- function(x, contexts = NULL, min_membership = 0.1) {
    min_membership <- .check_number(min_membership, "min_membership",
                                    min = 0, max = 1)
    m <- .sigel_model_py(x)
    imgs <- .sigel_images_py(x)
    if (!is.null(contexts)) {
        contexts <- if (is.numeric(contexts)) paste0("context_", contexts)
            else as.character(contexts)
        contexts <- as.list(contexts)
    }
    tl <- .sigel_py()$tl
    res <- .py_call(tl$context_scores(m, imgs, contexts = contexts,
                                      min_membership = min_membership),
                    "sigelContextScores")
    out <- .py_df_matrix(res)
    if (!is.matrix(x) && !inherits(x, "SigelResult") &&
        !is.null(colnames(x)) && all(colnames(x) %in% rownames(out))) {
        out <- out[colnames(x), , drop = FALSE]
    }
    out
}
