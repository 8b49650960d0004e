# Groups of one or two genes are left out of enrichment by default.

test_that("enrichment leaves out groups below min_group_size", {
    skip_if_no_sigel_python()
    set.seed(7)
    genes <- paste0("g", 1:62)
    emb <- matrix(rnorm(62 * 4), 62, 4, dimnames = list(genes, NULL))
    # two big groups and one 2-gene group whose two genes form a whole set
    groups <- stats::setNames(c(rep("big1", 30), rep("big2", 30),
                                rep("tiny", 2)), genes)
    sets <- list(TINY = c("g61", "g62", "g1", "g31", "g2"),
                 BIG = genes[1:20])
    tab <- sigelEnrichment(emb, sets, groups = groups, min_size = 2)
    expect_false("tiny" %in% tab$context)
    expect_true(all(tab$group_size >= 5))
    expect_equal(attr(tab, "n_groups_below_min_size"), 1L)
    all_groups <- sigelEnrichment(emb, sets, groups = groups, min_size = 2,
                                  min_group_size = 1)
    tiny <- all_groups[all_groups$context == "tiny" & all_groups$set == "TINY", ]
    expect_equal(tiny$group_size, 2L)
    expect_lt(tiny$p, 0.01)   # would be reported as "enriched"
    # rows of the kept groups are unchanged (BH within each group)
    keep <- all_groups[all_groups$context != "tiny", ]
    rownames(keep) <- NULL
    expect_equal(tab[, c("context", "set", "p", "q")],
                 keep[, c("context", "set", "p", "q")])
    # with one BH family per grouping, q is recomputed over the kept tests
    ta <- sigelEnrichment(emb, sets, groups = groups, min_size = 2,
                          fdr_scope = "all")
    expect_equal(ta$q, stats::p.adjust(ta$p, "BH"))
    expect_error(sigelEnrichment(emb, sets, groups = groups,
                                 min_group_size = 0), "`min_group_size`")
})
