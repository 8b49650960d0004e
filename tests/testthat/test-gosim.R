# GO semantic similarity vs embedding similarity (GOSemSim offline).

.go_genes <- c("SNAP25", "SYT1", "STX1A", "VAMP2", "SYN1", "MBP", "PLP1",
               "MOBP", "MOG", "GFAP", "AQP4", "SLC1A3", "HBA1", "HBB",
               "CD74", "HLA-DRA")

test_that("sigelGOSimilarity: table, Spearman and random control", {
    skip_if_not_installed("GOSemSim")
    skip_if_not_installed("org.Hs.eg.db")
    set.seed(10)
    emb <- matrix(rnorm(length(.go_genes) * 8), length(.go_genes), 8,
                  dimnames = list(.go_genes, NULL))
    res <- sigelGOSimilarity(emb, n_pairs = 45, seed = 3)
    expect_named(res, c("spearman", "spearman_random", "p_value", "n_pairs",
                        "n_genes", "n_annotated", "n_unmapped", "ont",
                        "measure", "pairs"))
    expect_equal(res$n_genes, 10L)               # 10 genes -> 45 pairs
    expect_equal(res$n_pairs, nrow(res$pairs))
    expect_lte(res$n_pairs, 45L)
    p <- res$pairs
    expect_equal(colnames(p), c("gene1", "gene2", "symbol1", "symbol2",
                                "go_sim", "cosine", "cosine_random"))
    expect_true(all(p$go_sim >= 0 & p$go_sim <= 1))
    u <- emb / sqrt(rowSums(emb^2))
    expect_equal(p$cosine, unname(rowSums(u[p$gene1, ] * u[p$gene2, ])),
                 tolerance = 1e-12)
    expect_equal(res$spearman, stats::cor(p$cosine, p$go_sim,
                                          method = "spearman"))
    # seeded, and the caller's RNG stream is left alone
    set.seed(99)
    before <- stats::runif(1)
    set.seed(99)
    again <- sigelGOSimilarity(emb, n_pairs = 45, seed = 3)
    expect_equal(stats::runif(1), before)
    expect_equal(again$pairs, res$pairs)
})

test_that("sigelGOSimilarity: an embedding built from GO tracks GO", {
    skip_if_not_installed("GOSemSim")
    skip_if_not_installed("org.Hs.eg.db")
    gd <- sigel:::.godata("org.Hs.eg.db", "BP", "SYMBOL")
    S <- GOSemSim::mgeneSim(.go_genes, semData = gd, measure = "Wang",
                            verbose = FALSE)
    # each gene's vector = its GO similarity profile: cosine follows GO
    res <- sigelGOSimilarity(S, n_pairs = 200, seed = 1)
    expect_equal(res$n_genes, nrow(S))
    expect_gt(res$spearman, 0.5)
    expect_lt(abs(res$spearman_random), res$spearman)
    expect_lt(res$p_value, 1e-4)
})

test_that("sigelGOSimilarity: identifiers and input errors", {
    skip_if_not_installed("GOSemSim")
    skip_if_not_installed("org.Hs.eg.db")
    set.seed(1)
    ens <- sprintf("ENSG%011d", seq_along(.go_genes))
    emb <- matrix(rnorm(length(ens) * 4), length(ens), 4,
                  dimnames = list(ens, NULL))
    expect_error(sigelGOSimilarity(emb, n_pairs = 10), "fewer than 3")
    sym <- stats::setNames(.go_genes, ens)
    sym[1:2] <- NA
    res <- sigelGOSimilarity(emb, n_pairs = 10, gene_symbols = sym,
                             control = FALSE)
    expect_true(all(res$pairs$gene1 %in% ens[-(1:2)]))
    expect_equal(res$n_unmapped, 2L)
    expect_true(is.na(res$spearman_random))
    expect_false("cosine_random" %in% colnames(res$pairs))
    expect_error(sigelGOSimilarity(emb, n_pairs = 0), "n_pairs")
    expect_error(sigelGOSimilarity(emb, ont = "XX"))
    expect_error(sigelGOSimilarity(emb, genes = "nope",
                                   gene_symbols = sym), "not embedded")
})
