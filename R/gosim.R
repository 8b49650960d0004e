# GO semantic coherence of the gene embedding (GOSemSim, offline).

.sigel_cache <- new.env(parent = emptyenv())

# Where cached GO data live: option sigel.cache_dir, else the user cache
# directory, else the session's tempdir().
.cache_dir <- function() {
    d <- getOption("sigel.cache_dir", NULL)
    if (is.null(d)) d <- tools::R_user_dir("sigel", which = "cache")
    ok <- dir.exists(d) || isTRUE(tryCatch(
        dir.create(d, recursive = TRUE, showWarnings = FALSE),
        error = function(e) FALSE))
    if (!ok || file.access(d, 2L) != 0L) d <- tempdir()
    d
}

#' GOSemSim data for an ontology, cached in memory and on disk
#' @keywords internal
#' @noRd
.godata <- function(OrgDb = "org.Hs.eg.db", ont = "BP", keytype = "SYMBOL",
                    cache = TRUE) {
    for (p in c("GOSemSim", OrgDb)) {
        if (!requireNamespace(p, quietly = TRUE)) {
            stop("sigelGOSimilarity() needs the ", p, " package",
                 call. = FALSE)
        }
    }
    ver <- as.character(utils::packageVersion(OrgDb))
    key <- paste("godata", OrgDb, ver, ont, keytype, sep = "_")
    if (!is.null(.sigel_cache[[key]])) return(.sigel_cache[[key]])
    file <- file.path(.cache_dir(), paste0(key, ".rds"))
    gd <- NULL
    if (cache && file.exists(file)) {
        gd <- tryCatch(readRDS(file), error = function(e) NULL)
    }
    if (is.null(gd)) {
        gd <- suppressMessages(GOSemSim::godata(OrgDb, ont = ont,
                                                keytype = keytype,
                                                computeIC = FALSE))
        if (cache) try(saveRDS(gd, file), silent = TRUE)
    }
    .sigel_cache[[key]] <- gd
    gd
}

.cosine_pairs <- function(m, a, b) {
    u <- m[a, , drop = FALSE]
    v <- m[b, , drop = FALSE]
    unname(rowSums(u * v) / sqrt(rowSums(u * u) * rowSums(v * v)))
}

#' GO semantic similarity versus embedding similarity
#'
#' Do genes with similar SIGEL vectors share biological function? Samples
#' genes annotated in the GO ontology `ont`, computes the semantic
#' similarity of every pair among them with GOSemSim (offline, from
#' `OrgDb`; the default `"Wang"` measure needs no information content) and
#' the cosine similarity of their vectors, and reports the Spearman
#' correlation, next to the same correlation for random vectors of equal
#' dimension (the control).
#'
#' The GO data (`GOSemSim::godata(OrgDb, ont, keytype = "SYMBOL",
#' computeIC = FALSE)`) are built once and cached in memory and, with
#' `cache = TRUE`, as an RDS file in `getOption("sigel.cache_dir")`, else
#' [tools::R_user_dir()] (falling back to [tempdir()]).
#'
#' @inheritParams sigelNeighbors
#' @param ont `character(1)`: `"BP"`, `"MF"` or `"CC"`.
#' @param n_pairs `integer(1)`: (at least) this many gene pairs: all pairs
#'   among `ceiling((1 + sqrt(1 + 8 * n_pairs)) / 2)` sampled genes (pairs
#'   from a gene sample, so GO term similarities are computed once).
#' @param measure `character(1)`: GOSemSim measure; `"Wang"` works without
#'   information content, the others (`"Resnik"`, `"Lin"`, `"Rel"`,
#'   `"Jiang"`) compute it (slower, ~25 s once).
#' @param combine `character(1)`: how term similarities combine into gene
#'   similarity (`"BMA"`, `"max"`, `"avg"`, `"rcmax"`, `"rcmax.avg"`).
#' @param drop `character` or `NULL`: GO evidence codes to ignore (GOSemSim
#'   default `"IEA"`).
#' @param genes `character` or `NULL`: restrict sampling to these genes (row
#'   names of x).
#' @param control `logical(1)`: also correlate random vectors.
#' @param OrgDb `character(1)`: the OrgDb package (symbols as keys).
#' @param cache `logical(1)`: keep the GO data on disk between sessions.
#' @param seed `integer(1)`: seed of the gene sample and random vectors (the
#'   global RNG state is restored afterwards).
#' @return A list with `spearman` (embedding cosine vs GO similarity),
#'   `spearman_random` (random vectors; `NA` without `control`), `p_value`
#'   (of `spearman`), `n_pairs`, `n_genes` (sampled), `n_annotated`
#'   (embedded genes with GO annotation), `n_unmapped` (embedded genes
#'   without a symbol or annotation) and `pairs`, a `data.frame` with
#'   `gene1`, `gene2` (row names of x), `symbol1`, `symbol2`, `go_sim`,
#'   `cosine`, `cosine_random`.
#' @references Li et al. (2025) Genome Biology 26:287. Yu G et al. (2010)
#'   GOSemSim: an R package for measuring semantic similarity among GO terms
#'   and gene products. Bioinformatics 26:976-978. Wang JZ et al. (2007) A
#'   new method to measure the semantic similarity of GO terms.
#'   Bioinformatics 23:1274-1281.
#' @seealso [sigelEnrichment()], [sigelInteractions()]
#' @examples
#' if (requireNamespace("GOSemSim", quietly = TRUE) &&
#'     requireNamespace("org.Hs.eg.db", quietly = TRUE)) {
#'     genes <- c("GFAP", "AQP4", "SLC1A2", "SLC1A3", "SNAP25", "SYT1",
#'                "STMN2", "MBP", "PLP1", "MOBP", "MOG", "RBFOX3")
#'     emb <- matrix(rnorm(length(genes) * 8), length(genes), 8,
#'                   dimnames = list(genes, NULL))
#'     res <- sigelGOSimilarity(emb, n_pairs = 30)
#'     res$spearman
#'     head(res$pairs)
#' }
#' @export
sigelGOSimilarity <- function(x, ont = c("BP", "MF", "CC"), n_pairs = 1000L,
                              measure = "Wang", combine = "BMA",
                              drop = "IEA", gene_symbols = NULL,
                              genes = NULL, control = TRUE,
                              OrgDb = "org.Hs.eg.db", cache = TRUE,
                              seed = 1L, model = NULL) {
    ont <- match.arg(ont)
    measure <- match.arg(measure, c("Wang", "Resnik", "Lin", "Rel",
                                    "Jiang"))
    combine <- match.arg(combine, c("BMA", "max", "avg", "rcmax",
                                    "rcmax.avg"))
    n_pairs <- .check_number(n_pairs, "n_pairs", min = 1, whole = TRUE)
    seed <- .check_seed(seed)
    emb <- .emb_matrix(if (is.null(model)) x else model)
    ids <- rownames(emb)
    sym <- .symbol_map(x, gene_symbols, ids)
    if (is.null(sym)) sym <- stats::setNames(ids, ids)
    if (!is.null(genes)) {
        bad <- setdiff(genes, ids)
        if (length(bad)) stop(length(bad), " `genes` are not embedded: ",
                              .fmt_names(bad, 10), call. = FALSE)
        sym <- sym[intersect(names(sym), genes)]
    }
    gd <- if (measure == "Wang") .godata(OrgDb, ont, "SYMBOL", cache) else {
        suppressMessages(GOSemSim::godata(OrgDb, ont = ont,
                                          keytype = "SYMBOL",
                                          computeIC = TRUE))
    }
    anno <- gd@geneAnno
    if (!is.null(drop)) anno <- anno[!anno$EVIDENCE %in% drop, ,
                                     drop = FALSE]
    annotated <- unique(anno[[1]])
    sym <- sym[!duplicated(sym) & sym %in% annotated]
    n_unmapped <- length(ids) - length(sym)
    if (length(sym) < 3L) {
        stop("fewer than 3 embedded genes have ", ont, " annotations in ",
             OrgDb, " (", length(ids), " genes; identifiers must be ",
             "symbols or mapped with `gene_symbols`)", call. = FALSE)
    }
    m_genes <- ceiling((1 + sqrt(1 + 8 * n_pairs)) / 2)
    m_genes <- min(m_genes, length(sym))

    # local RNG: restore the caller's stream afterwards
    old <- if (exists(".Random.seed", envir = globalenv()))
        get(".Random.seed", envir = globalenv()) else NULL
    on.exit(if (is.null(old)) rm(".Random.seed", envir = globalenv()) else
        assign(".Random.seed", old, envir = globalenv()), add = TRUE)
    set.seed(seed)
    pick <- sort(sample(length(sym), m_genes))
    sub <- sym[pick]
    rnd <- matrix(stats::rnorm(length(ids) * ncol(emb)), length(ids),
                  ncol(emb), dimnames = list(ids, NULL))

    S <- GOSemSim::mgeneSim(unname(sub), semData = gd, measure = measure,
                            drop = drop, combine = combine, verbose = FALSE)
    keep_sym <- intersect(unname(sub), rownames(S))
    sub <- sub[match(keep_sym, sub)]
    if (length(sub) < 3L) {
        stop("fewer than 3 sampled genes have usable GO annotations",
             call. = FALSE)
    }
    ij <- which(upper.tri(diag(length(sub))), arr.ind = TRUE)
    a <- names(sub)[ij[, 1]]
    b <- names(sub)[ij[, 2]]
    go <- S[cbind(match(sub[ij[, 1]], rownames(S)),
                  match(sub[ij[, 2]], colnames(S)))]
    pairs <- data.frame(gene1 = a, gene2 = b,
                        symbol1 = unname(sub[ij[, 1]]),
                        symbol2 = unname(sub[ij[, 2]]),
                        go_sim = as.numeric(go),
                        cosine = .cosine_pairs(emb, a, b),
                        cosine_random = .cosine_pairs(rnd, a, b),
                        stringsAsFactors = FALSE)
    pairs <- pairs[is.finite(pairs$go_sim), , drop = FALSE]
    rownames(pairs) <- NULL
    ct <- suppressWarnings(stats::cor.test(pairs$cosine, pairs$go_sim,
                                           method = "spearman",
                                           exact = FALSE))
    rho_rnd <- if (isTRUE(control)) {
        suppressWarnings(stats::cor(pairs$cosine_random, pairs$go_sim,
                                    method = "spearman"))
    } else NA_real_
    if (!isTRUE(control)) pairs$cosine_random <- NULL
    list(spearman = unname(ct$estimate), spearman_random = rho_rnd,
         p_value = ct$p.value, n_pairs = nrow(pairs),
         n_genes = length(sub), n_annotated = length(sym),
         n_unmapped = n_unmapped, ont = ont, measure = measure,
         pairs = pairs)
}
