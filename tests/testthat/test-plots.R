# Readable defaults: at most 12 context panels, no raster warnings.

test_that("plotContexts shows the 12 largest contexts, without warnings", {
    skip_if_no_sigel_python()
    sce <- sigel_tiny_sce(150L)
    h <- sigel_tiny_hyper()
    # this fit must occupy more than 12 contexts: with full images
    # (rarefy = NULL), the box scaffold at weight 1 and 24 on offer it does
    # (17 at seed 2). The depth-matched default, 16 contexts at the sharper
    # default temperature (12 occupied) and the default PCA scaffold at
    # weight 3 (9 of 24 occupied) do not on 150 tiny genes
    h$n_contexts <- 24L
    h["rarefy"] <- list(NULL)
    h$scaffold_graph <- "box"
    h$scaffold_weight <- 1
    fit <- do.call(runSIGEL, c(list(sce), h, list(seed = 2L, verbose = FALSE,
                                                  n_threads = 1L)))
    sizes <- table(sigelContexts(fit)$context)
    expect_gt(length(sizes), 12L)
    p <- plotContexts(fit)
    expect_equal(nlevels(p$data$panel), 12L)
    shown <- as.integer(sub("^context_([0-9]+) .*$", "\\1",
                            levels(p$data$panel)))
    # the shown contexts are the largest ones
    expect_gte(min(sizes[as.character(shown)]),
               max(sizes[setdiff(names(sizes), as.character(shown))]))
    grDevices::pdf(NULL)
    on.exit(grDevices::dev.off(), add = TRUE)
    expect_no_warning(print(p))
    pe <- plotContexts(fit, type = "embedding")
    expect_lte(nlevels(pe$data$context), 13L)
    expect_true("other" %in% levels(pe$data$context))
    expect_no_warning(print(pe))
    pall <- plotContexts(fit, n_max = Inf)
    expect_equal(nlevels(pall$data$panel), length(sizes))
    expect_no_warning(print(plotGeneImages(fit, rownames(fit)[1:3])))
    expect_error(plotContexts(fit, n_max = 0), "`n_max` must be")
})

test_that("images with gaps (off-tissue pixels) draw without warnings", {
    # columns 1, 2, 4 and 7: geom_raster() would warn "Raster pixels are
    # placed at uneven horizontal intervals"
    d <- data.frame(row = c(1, 1, 1, 2, 2), col = c(1, 2, 4, 1, 7),
                    value = c(0, 0.5, 1, 0.2, 0.8), panel = factor("g"))
    p <- sigel:::.raster_plot(d, NULL, "value", "t")
    grDevices::pdf(NULL)
    on.exit(grDevices::dev.off(), add = TRUE)
    expect_no_warning(print(p))
    raster <- ggplot2::ggplot(d, ggplot2::aes(col, row, fill = value)) +
        ggplot2::geom_raster()
    expect_warning(print(raster), "uneven")
})
