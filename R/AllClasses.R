#' A trained SIGEL model, as seen from R
#'
#' The R side of a trained model: the bytes of the directory written by the
#' Python backend (`config.json` plus `weights.safetensors`, a few hundred
#' kB; no pickles), the path it was saved at and a copy of its
#' configuration. It never holds a Python object, so it survives
#' [saveRDS()] / [readRDS()] in a new R session: when the directory at
#' `path` is gone (a model fitted under [tempdir()] in an earlier session),
#' the saved bytes are written to a new folder under [tempdir()] on first
#' use and the model is loaded from there (and cached for the session).
#'
#' Models fitted by [runSIGEL()] are saved under [tempdir()] unless
#' `model_dir` is given. Use [saveSigelModel()] to write the model to a
#' folder of your choice.
#'
#' @slot path `character(1)`: the model directory it was saved at.
#' @slot config `list`: hyper-parameters (`params`), fit settings (`fit`),
#'   image settings (`images`), gene names (`genes`), embedding dimension
#'   (`embed_dim`), number of contexts (`n_contexts`) and backend version.
#' @slot files `list`: the model directory's files, as raw vectors named by
#'   file name.
#' @return `SigelModel` objects are made by [runSIGEL()] and
#'   [loadSigelModel()].
#' @seealso [runSIGEL()], [saveSigelModel()], [loadSigelModel()],
#'   [sigelModel()]
#' @examples
#' showClass("SigelModel")
#' @export
setClass("SigelModel", representation(path = "character", config = "list",
                                      files = "list"))

setValidity("SigelModel", function(object) {
    msg <- character()
    if (length(object@path) != 1L) msg <- c(msg, "`path` must be one string")
    if (length(object@files) &&
        (is.null(names(object@files)) ||
         !all(vapply(object@files, is.raw, logical(1))))) {
        msg <- c(msg, "`files` must be a named list of raw vectors")
    }
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
    kb <- sum(vapply(object@files, length, numeric(1))) / 1024
    cat("  saved at:     ", object@path,
        if (!ok && length(object@files)) "  [gone; restored from the object]"
        else if (!ok) "  [MISSING]", "\n", sep = "")
    if (length(object@files)) {
        cat("  carried:      ", length(object@files), " files, ",
            format(round(kb)), " kB\n", sep = "")
    }
    invisible(object)
})

.null_or <- function(x, alt) if (is.null(x)) alt else x
