# Contexts and gene-gene relations from R: neighbours, enrichment,
# interactions and per-spot context scores, with the real backend.

.clustered_emb <- function(n_per = 20L, n_fam = 3L, dim = 6L, noise = 0.3,
                           seed = 1L) {
    set.seed(seed)
    fam <- rep(seq_len(n_fam), each = n_per)
    emb <- matrix(rnorm(n_fam * dim), n_fam)[fam, ] +
        noise * matrix(rnorm(length(fam) * dim), length(fam))
    rownames(emb) <- paste0("g", seq_along(fam))
    list(emb = emb, fam = stats::setNames(fam, rownames(emb)))
}

test_that("sigelNeighbors: cosine neighbours of a matrix, symbols, errors", {
    skip_if_no_sigel_python()
    d <- .clustered_emb()
    nb <- sigelNeighbors(d$emb, c("g1", "g30"), k = 5)
    expect_s3_class(nb, "data.frame")
    expect_equal(colnames(nb), c("query", "neighbor", "cosine", "rank"))
    expect_equal(nrow(nb), 10L)
    e <- sweep(d$emb, 2, colMeans(d$emb))          # centred cosines (default)
    u <- e / sqrt(rowSums(e^2))
    s <- drop(u %*% u["g1", ])
    s <- sort(s[names(s) != "g1"], decreasing = TRUE)
    expect_equal(nb$neighbor[nb$query == "g1"], names(s)[1:5])
    expect_equal(nb$cosine[nb$query == "g1"], unname(s[1:5]),
                 tolerance = 1e-10)
    # family genes are the nearest ones
    expect_true(all(d$fam[nb$neighbor] == d$fam[nb$query]))
    # raw cosines on request
    raw <- sigelNeighbors(d$emb, "g1", k = 5, center = FALSE)
    u0 <- d$emb / sqrt(rowSums(d$emb^2))
    s0 <- drop(u0 %*% u0["g1", ])
    s0 <- sort(s0[names(s0) != "g1"], decreasing = TRUE)
    expect_equal(raw$cosine, unname(s0[1:5]), tolerance = 1e-10)
    # symbols
    sym <- stats::setNames(paste0("SYM", seq_len(nrow(d$emb))),
                           rownames(d$emb))
    nb2 <- sigelNeighbors(d$emb, "SYM1", k = 5, gene_symbols = sym)
    expect_equal(nb2$neighbor, nb$neighbor[nb$query == "g1"])
    expect_equal(nb2$query_symbol[1], "SYM1")
    expect_error(sigelNeighbors(d$emb, "g1", k = 0), "`k`")
    expect_error(sigelNeighbors(d$emb, "nope"), "none of the")
    expect_error(sigelNeighbors(unname(d$emb)), "rownames")
})

test_that("sigelEnrichment: GMT file, list, resolutions, attributes", {
    skip_if_no_sigel_python()
    d <- .clustered_emb()
    gmt <- tempfile(fileext = ".gmt")
    writeLines(c(
        paste(c("FAM1", "na", names(d$fam)[d$fam == 1]), collapse = "\t"),
        paste(c("FAM2", "na", names(d$fam)[d$fam == 2], "UNKNOWN"),
              collapse = "\t")), gmt)
    groups <- stats::setNames(paste0("grp", d$fam), names(d$fam))
    tab <- sigelEnrichment(d$emb, gmt, groups = groups)
    expect_true(all(c("resolution", "context", "set", "overlap", "set_size",
                      "group_size", "p", "q", "genes") %in% colnames(tab)))
    top <- tab[tab$context == "grp1" & tab$set == "FAM1", ]
    expect_equal(top$overlap, 20L)
    expect_equal(top$p, stats::phyper(19, 20, 40, 20, lower.tail = FALSE),
                 tolerance = 1e-8)
    expect_lt(top$q, 1e-6)
    expect_equal(attr(tab, "n_set_genes_unmapped"), 1L)
    expect_equal(attr(tab, "universe_size"), 60L)
    # the same sets as a list, groups as a list of genes
    sets <- list(FAM1 = names(d$fam)[d$fam == 1],
                 FAM2 = c(names(d$fam)[d$fam == 2], "UNKNOWN"))
    tab2 <- sigelEnrichment(d$emb, sets,
                            groups = split(names(groups), groups))
    expect_equal(tab2[, c("context", "set", "p")], tab[, c("context", "set",
                                                             "p")])
    res <- sigelEnrichment(d$emb, sets, resolutions = c(3, 6), seed = 1)
    expect_setequal(unique(res$resolution), c("k3", "k6"))
    expect_true(all(tapply(res$q, res$set, min) < 0.05))
    expect_error(sigelEnrichment(d$emb, sets), "contexts")
    expect_error(sigelEnrichment(d$emb, sets, groups = groups,
                                 resolutions = 3), "either")
    expect_error(sigelEnrichment(d$emb, "no-such-file.gmt", groups = groups),
                 "not found")
})

test_that("sigelEnrichment: GO sets from org.Hs.eg.db for symbols", {
    skip_if_no_sigel_python()
    skip_if_not_installed("org.Hs.eg.db")
    skip_if_not_installed("AnnotationDbi")
    genes <- c("SNAP25", "SYT1", "STX1A", "SYN1", "VAMP2", "CPLX1", "NRXN1",
               "RIMS1", "UNC13A", "SYP", "MBP", "PLP1", "MOBP", "MOG", "MAG",
               "CLDN11", "OLIG1", "OLIG2", "SOX10", "CNP")
    set.seed(2)
    emb <- matrix(rnorm(length(genes) * 4), length(genes), 4,
                  dimnames = list(genes, NULL))
    groups <- stats::setNames(rep(c("neuron", "oligo"), each = 10), genes)
    tab <- sigelEnrichment(emb, groups = groups, OrgDb = "org.Hs.eg.db",
                           ont = "BP", min_size = 3)
    expect_true(all(grepl("^GO:", tab$set)))
    if ("description" %in% colnames(tab)) {
        expect_type(tab$description, "character")
    }
    syn <- tab[tab$context == "neuron", ]
    expect_lt(min(syn$q), 0.05)
})

test_that("sigelInteractions: metrics, random control, predictions", {
    skip_if_no_sigel_python()
    d <- .clustered_emb(noise = 0.5)
    set.seed(3)
    ij <- t(utils::combn(60, 2))
    ij <- ij[sample(nrow(ij), 300), ]
    pairs <- data.frame(a = names(d$fam)[ij[, 1]], b = names(d$fam)[ij[, 2]],
                        label = as.integer(d$fam[ij[, 1]] == d$fam[ij[, 2]]))
    res <- sigelInteractions(d$emb, pairs, classifiers = "logistic",
                             n_splits = 3, new_pairs = pairs[1:5, 1:2],
                             genes = c("g1", "g2", "g45"))
    m <- res$metrics
    expect_setequal(m$embedding, c("sigel", "random"))
    expect_gt(m$auroc[m$embedding == "sigel"], 0.9)
    expect_lt(abs(m$auroc[m$embedding == "random"] - 0.5), 0.15)
    expect_equal(nrow(res$predictions), 5L)
    expect_true(all(res$predictions$score >= 0 & res$predictions$score <= 1))
    expect_equal(dim(res$strength), c(3L, 3L))
    expect_gt(res$strength["g1", "g2"], res$strength["g1", "g45"])
    expect_error(sigelInteractions(d$emb, pairs[, 1:2]), "labels")
    expect_error(sigelInteractions(d$emb, transform(pairs, label = 2L)),
                 "0/1")
})

test_that("SCE with SIGEL results: neighbours by rowData symbols, scores", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    genes <- rownames(sce)
    SummarizedExperiment::rowData(sce)$symbol <- toupper(genes)
    nb <- sigelNeighbors(sce, toupper(genes[1]), k = 3,
                         gene_symbols = "symbol")
    expect_equal(unique(nb$query), genes[1])
    expect_equal(nb$neighbor_symbol, toupper(nb$neighbor))
    expect_error(sigelNeighbors(sce, genes[1], gene_symbols = "nope"),
                 "not in the feature metadata")
    sc <- sigelContextScores(sce)
    expect_equal(dim(sc), c(ncol(sce), ncol(sigelMemberships(sce))))
    expect_equal(rownames(sc), colnames(sce))
    expect_true(all(is.finite(sc)) && all(sc >= 0 & sc <= 1))
    SingleCellExperiment::reducedDim(sce, "sigel_contexts") <- sc
    expect_true("sigel_contexts" %in% SingleCellExperiment::reducedDimNames(
        sce))
    # default groups = contexts
    sets <- list(first = genes[1:10], second = genes[11:30])
    tab <- sigelEnrichment(sce, sets, min_size = 3)
    expect_true(all(grepl("^context_", tab$context)))
    expect_error(sigelContextScores(sce, min_membership = 2), "min_membership")
})
