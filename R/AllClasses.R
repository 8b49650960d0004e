#' A trained SIGEL model, as seen from R
#'
#' The R side of a trained model is a pointer to a directory written by the
#' Python backend (`config.json` plus tensor weights) and a copy of its
#' configuration; it never holds a Python object, so it survives
#' [saveRDS()]. The Python model is loaded from `path` when needed (and
#' cached for the session).
#'
#' Models fitted by [runSIGEL()] are saved under [tempdir()] unless
#' `model_dir` is given: such a model disappears with the R session. Use
#' [saveSigelModel()] (or `model_dir =`) to keep it.
#'
#' @slot path `character(1)`: the model directory.
#' @slot config `list`: hyper-parameters (`params`), fit settings (`fit`),
#'   image settings (`images`), gene names (`genes`), embedding dimension
#'   (`embed_dim`), number of contexts (`n_contexts`) and backend version.
#' @return `SigelModel` objects are made by [runSIGEL()] and
#'   [loadSigelModel()].
#' @seealso [runSIGEL()], [saveSigelModel()], [loadSigelModel()],
#'   [sigelModel()]
#' @examples
#' showClass("SigelModel")
#' @export
setClass("SigelModel", representation(path = "character", config = "list"))

setValidity("SigelModel", function(object) {
    msg <- character()
    if (length(object@path) != 1L) msg <- c(msg, "`path` must be one string")
    if (length(msg)) msg else TRUE
})

#' @rdname SigelModel-class
#' @param object a `SigelModel`.
#' @export
setMethod("show", "SigelModel", function(object) {
    cfg <- object@config
    cat("SigelModel (SIGEL gene embeddings)\n")
    cat("  genes:        ", length(cfg$genes), "\n", sep = "")
    cat("  embed_dim:    ", .null_or(cfg$embed_dim, "?"), "\n", sep = "")
    cat("  n_contexts:   ", .null_or(cfg$n_contexts, "?"), "\n", sep = "")
    if (!is.null(cfg$epochs_run)) {
        cat("  epochs run:   ", cfg$epochs_run,
            if (!is.null(cfg$stop_reason)) paste0(" (", cfg$stop_reason, ")"),
            "\n", sep = "")
    }
    ok <- dir.exists(object@path)
    cat("  saved at:     ", object@path,
        if (!ok) "  [MISSING: save with saveSigelModel()]", "\n", sep = "")
    invisible(object)
})

.null_or <- function(x, alt) if (is.null(x)) alt else x
