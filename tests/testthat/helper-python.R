# Python-dependent tests skip when no backend is found -- except in CI, where
# SIGEL_REQUIRE_BACKEND=1 turns the skip into a failure.
skip_if_no_sigel_python <- function() {
    if (sigel::sigelPythonAvailable()) return(invisible(TRUE))
    if (identical(Sys.getenv("SIGEL_REQUIRE_BACKEND"), "1")) {
        stop("SIGEL_REQUIRE_BACKEND=1 but the sigel Python backend is not ",
             "available (python: ", sigel::sigelPythonPath(), ")")
    }
    testthat::skip("sigel Python backend not available")
}
