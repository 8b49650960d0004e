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

# One thread count for the whole suite, as in the Python tests: the automatic
# count follows the machine's load, and torch sums in another order with 1 and
# with 2 threads, so two calls that should agree could differ slightly when the
# load changed between them. Set before the backend starts (Python reads its
# environment once), unless the caller chose a count.
if (!nzchar(Sys.getenv("SIGEL_NUM_THREADS"))) Sys.setenv(SIGEL_NUM_THREADS = "1")
