# Every R task wrapper has the defaults of the Python function it calls, for
# every argument the two share (same name, or a renamed pair listed below).
# Like the `.sigel_hyper` test in test-runSIGEL.R, read from the signatures.

.py_defaults <- function(expr) {
    code <- paste0(
        "{k: (None if v.default is __import__('inspect').Parameter.empty ",
        "else v.default) for k, v in __import__('inspect').signature(",
        expr, ").parameters.items()}")
    reticulate::py_eval(code)
}

# R default of an argument: choice vectors (match.arg) mean their first
# element, unless the R function takes several (`several`).
.r_default <- function(f, nm, several = character()) {
    v <- eval(formals(f)[[nm]], envir = environment(f))
    if (is.character(v) && length(v) > 1L && !nm %in% several) v <- v[1]
    v
}

test_that("R task defaults equal the Python defaults", {
    skip_if_no_sigel_python()
    sigel:::.sigel_py()
    tasks <- list(
        sigelSVG = "svg", sigelPatternSearch = "pattern_search",
        sigelCompareSVG = "compare_svg", sigelAlign = "align",
        sigelShiftedGenes = "shifted_genes",
        sigelAlteredInteractions = "altered_interactions",
        sigelInteractionModules = "interaction_modules",
        sigelImpute = "impute", sigelImputeCV = "impute_cv",
        sigelPruneGenes = "prune_genes", sigelDomains = "spatial_domains",
        sigelDomainScores = "domain_scores", sigelNeighbors = "neighbors",
        sigelEnrichment = "enrichment", sigelInteractions = "interactions",
        sigelContextScores = "context_scores")
    # R name -> Python name where the languages name an argument differently
    # (R's `verbose` is not Python's `progress`: it also sets the log level)
    renamed <- list(sigelCompareSVG = c(k = "n_neighbors"))
    several <- c("classifiers")
    # arguments that exist in both but mean different things in R: the data
    # or model argument (no default in either), and R's `model` (the model
    # when `x` is plain data; Python's first argument is the model)
    skip_args <- c("x", "model", "genes", "pairs", "labels", "truth",
                   "template", "reference", "query")
    n_checked <- 0L
    for (rf in names(tasks)) {
        f <- get(rf, envir = asNamespace("sigel"))
        py <- .py_defaults(paste0("__import__('sigel').tl.", tasks[[rf]]))
        map <- stats::setNames(names(formals(f)), names(formals(f)))
        ren <- renamed[[rf]]
        if (!is.null(ren)) map[names(ren)] <- ren
        for (nm in setdiff(names(map), skip_args)) {
            pn <- map[[nm]]
            if (!pn %in% names(py)) next
            rv <- .r_default(f, nm, several)
            pv <- py[[pn]]
            if (is.list(pv)) pv <- unlist(pv)
            expect_equal(rv, pv, info = paste0(rf, "(", nm, ") vs tl.",
                                               tasks[[rf]], "(", pn, ")"))
            n_checked <- n_checked + 1L
        }
    }
    expect_gt(n_checked, 80L)
    # the fit arguments of runSIGEL() and SIGEL.fit
    py <- .py_defaults("__import__('sigel').SIGEL.fit")
    f <- sigel:::.run_sce
    for (nm in intersect(c("seed", "device", "n_threads"), names(py))) {
        expect_equal(.r_default(f, nm), py[[nm]], info = paste("fit", nm))
    }
})
