# sigelPruneGenes(), sigelDomains(), sigelDomainScores()

test_that("sigelDomainScores ignores NA truth", {
    skip_if_no_sigel_python()
    s <- sigelDomainScores(c(1, 1, 2, 2, 3), c("a", "a", "b", "b", NA))
    expect_equal(rownames(s), "labels")
    expect_equal(s$ari, 1)
    expect_equal(s$n_spots, 4)
    two <- sigelDomainScores(data.frame(p = c(1, 2, 1, 2), q = c(1, 1, 2, 2)),
                             c("a", "a", "b", "b"))
    expect_equal(rownames(two), c("p", "q"))
    expect_equal(two["q", "nmi"], 1)
    expect_error(sigelDomainScores(1:3, c("a", "b")), "entries")
})

test_that("sigelPruneGenes keeps the best gene(s) of each context", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    sel <- sigelPruneGenes(sce, keep = 1, score = "morans_i")
    expect_s3_class(sel, "data.frame")
    expect_true(all(rownames(sel) %in% rownames(sce)))
    expect_equal(colnames(sel), c("group", "score", "qval", "rank",
                                  "group_size"))
    expect_true(all(sel$rank == 1))
    expect_false(anyDuplicated(sel$group) > 0)
    ctx <- sigelContexts(sce)
    expect_equal(ctx[rownames(sel), "context"], as.integer(sel$group))
    expect_identical(attr(sel, "score_method"), "morans_i")
    more <- sigelPruneGenes(sce, keep = 0.5, score = "morans_i")
    expect_gte(nrow(more), nrow(sel))
    thr <- sigelPruneGenes(sce, keep = 1, score = "morans_i",
                           group_by = "threshold", threshold = 0.5)
    expect_true(nrow(thr) >= 1)
    # errors in R terms before Python
    expect_error(sigelPruneGenes(sce, keep = 2.5), "keep")
    expect_error(sigelPruneGenes(sce, keep = 0), "keep")
    expect_error(sigelPruneGenes(sce, group_by = "kmeans"), "should be one of")
    expect_error(sigelPruneGenes(sigelExampleData()), "runSIGEL")
})

test_that("sigelDomains writes labels into colData / meta.data", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_fit()
    sel <- sigelPruneGenes(sce, keep = 0.5, score = "morans_i")
    out <- sigelDomains(sce, sel, n_domains = 3, max_epochs = 20,
                        n_threads = 1, truth = "layer")
    expect_s4_class(out, "SingleCellExperiment")
    expect_true(is.factor(out$sigel_domain))
    expect_true(is.factor(out$sigel_domain_refined))
    expect_equal(length(out$sigel_domain), ncol(sce))
    sc <- attr(out, "scores")
    expect_equal(rownames(sc), c("domain", "domain_refined"))
    expect_true(all(sc$ari > -1 & sc$ari <= 1))
    # same seed -> same labels; matrix input returns a data.frame
    again <- sigelDomains(sce, sel, n_domains = 3, max_epochs = 20,
                          n_threads = 1)
    expect_identical(again$sigel_domain, out$sigel_domain)
    counts <- SummarizedExperiment::assay(sce, "counts")
    xy <- as.data.frame(SingleCellExperiment::reducedDim(sce, "spatial"))
    m <- sigelDomains(counts, rownames(sel), n_domains = 3, max_epochs = 20,
                      n_threads = 1, coords = xy)
    expect_s3_class(m, "data.frame")
    expect_equal(rownames(m), colnames(sce))
    # Seurat meta.data
    so <- sigel_fake_visium(counts[, seq_len(60)])
    so <- sigelDomains(so, n_domains = 2, max_epochs = 10, n_threads = 1)
    expect_true("sigel_domain_refined" %in% colnames(so[[]]))
    expect_error(sigelDomains(sce, c("nope", "x")), "not genes of x")
    expect_error(sigelDomains(sce, n_domains = 1), "n_domains")
    expect_error(sigelDomains(sce, truth = "nope"), "not found")
})
