# sigelAlign / sigelShiftedGenes / sigelAlteredInteractions

.toy_pair <- function(n = 100, d = 4, n_changed = 5, seed = 1) {
    set.seed(seed)
    ref <- matrix(rnorm(n * d), n, d,
                  dimnames = list(paste0("g", seq_len(n)), NULL))
    rot <- qr.Q(qr(matrix(rnorm(d * d), d)))
    qry <- (ref + matrix(rnorm(n * d, sd = 0.05), n)) %*% rot
    qry[seq_len(n_changed), ] <- rnorm(n_changed * d)
    rownames(qry) <- rownames(ref)
    list(ref = ref, qry = qry, anchors = rownames(ref)[(n / 2 + 1):n])
}

test_that("sigelAlign on matrices: shapes, diagnostics, print", {
    skip_if_no_sigel_python()
    p <- .toy_pair()
    al <- sigelAlign(p$ref, p$qry, anchors = p$anchors)
    expect_s3_class(al, "SigelAlignment")
    expect_equal(dim(al$aligned), c(100L, 4L))
    expect_setequal(rownames(al$heldout), rownames(p$ref))
    expect_equal(al$diagnostics$n_anchors, 50L)
    expect_true(al$diagnostics$heldout_relative_error < 0.5)
    expect_true(all(c("residual", "heldout_shift", "used", "fold") %in%
                        colnames(al$anchors)))
    expect_null(al$noise)
    expect_output(print(al), "50 anchors")
    for (m in c("linear", "mlp")) {
        expect_s3_class(sigelAlign(p$ref, p$qry, anchors = p$anchors,
                                   method = m), "SigelAlignment")
    }
})

test_that("shifted genes: planted changes on top, gene rownames", {
    skip_if_no_sigel_python()
    p <- .toy_pair()
    tab <- sigelShiftedGenes(p$ref, p$qry, anchors = p$anchors)
    expect_s3_class(tab, "data.frame")
    expect_setequal(rownames(tab)[1:5], paste0("g", 1:5))
    expect_true(all(tab[paste0("g", 1:5), "qval"] < 0.05))
    expect_true(mean(tab$qval[-(1:5)] >= 0.05) > 0.9)
    expect_equal(tab$rank, seq_len(100))
    expect_true(is.logical(tab$anchor))
    al <- sigelAlign(p$ref, p$qry, anchors = p$anchors)
    expect_equal(sigelShiftedGenes(al), tab)
    for (g in list(plotShiftedGenes(tab), plotAlignment(al))) {
        expect_s3_class(g, "ggplot")
        expect_true(length(ggplot2::ggplot_build(g)$data) >= 2L)
    }
})

test_that("altered interactions and module summary", {
    skip_if_no_sigel_python()
    p <- .toy_pair(d = 8, n_changed = 0)
    p$ref["g1", ] <- -p$ref["g2", ]     # opposite in the reference,
    p$qry["g1", ] <- p$qry["g2", ]      # the same in the query
    al <- sigelAlign(p$ref, p$qry, anchors = p$anchors)
    pairs <- sigelAlteredInteractions(al, genes = "g1", top = NULL,
                                      standardize = "none")
    expect_s3_class(pairs, "data.frame")
    expect_equal(nrow(pairs), 99L)
    expect_setequal(unlist(pairs[1, c("gene_a", "gene_b")]), c("g1", "g2"))
    expect_true(pairs$qval[1] < 0.05 && pairs$delta[1] > 1.5)
    expect_equal(rownames(pairs)[1], paste(pairs$gene_a[1], pairs$gene_b[1],
                                           sep = "|"))
    expect_equal(nrow(sigelAlteredInteractions(al, top = 7)), 7L)
    g <- plotAlteredInteractions(pairs)
    expect_s3_class(g, "ggplot")
    expect_true(length(ggplot2::ggplot_build(g)$data) >= 2L)
    pairs$context_reference_a <- "context_0"
    pairs$context_reference_b <- ifelse(pairs$gene_b == "g2", "context_1",
                                        "context_0")
    mod <- sigelInteractionModules(pairs)
    expect_true("context_0|context_1" %in% rownames(mod))
    expect_error(sigelInteractionModules(pairs, side = "query"),
                 "context_query_a")
})

test_that("bad input is caught in R", {
    p <- .toy_pair()
    expect_error(sigelAlign(p$ref, p$qry, method = "procrustes"), "arg")
    expect_error(sigelAlign(p$ref, p$qry, anchors = 1:3), "anchors")
    expect_error(sigelAlign(p$ref, p$qry, trim = 0.9), "trim")
    expect_error(sigelShiftedGenes(p$ref), "query")
    expect_error(plotShiftedGenes(data.frame(a = 1)), "sigelShiftedGenes")
    rownames(p$qry) <- paste0("x", seq_len(nrow(p$qry)))
    expect_error(sigelAlign(p$ref, p$qry), "both samples")
    skip_if_no_sigel_python()
    p <- .toy_pair()
    expect_error(sigelAlign(p$ref, p$qry, noise = TRUE), "noise")
    expect_error(sigelAlign(p$ref, p$qry), "anchor")  # no housekeeping genes
})

test_that("two SCE objects with runSIGEL results: contexts and noise", {
    skip_if_no_sigel_python()
    sce <- sigelExampleData()
    tot <- Matrix::rowSums(SummarizedExperiment::assay(sce))
    sce <- sce[order(-tot)[1:60], ]
    a <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
                  embed_dim = 8, seed = 1, verbose = FALSE)
    b <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
                  embed_dim = 8, seed = 2, verbose = FALSE)
    al <- sigelAlign(a, b, anchors = rownames(sce)[1:40])
    expect_false(is.null(al$noise))
    expect_true(all(is.finite(al$noise$total)))
    tab <- sigelShiftedGenes(al)
    expect_true(all(c("context_reference", "context_query", "noise") %in%
                        colnames(tab)))
    expect_equal(nrow(tab), 60L)
    pairs <- sigelAlteredInteractions(al, n_genes = 5L, top = NULL)
    expect_true(all(c("context_reference_a", "context_query_b") %in%
                        colnames(pairs)))
    expect_s3_class(sigelInteractionModules(pairs, alpha = 1), "data.frame")
    # mouse symbols: the default (human) housekeeping anchors match
    # case-insensitively
    al2 <- sigelAlign(a, b, noise = FALSE, method = "linear")
    expect_gt(al2$diagnostics$n_anchors, 5L)
    expect_match(al2$diagnostics$anchor_source, "housekeeping")
})
