#' sigel: context-aware gene embeddings from spatial transcriptomics
#'
#' An R interface to the SIGEL method (Li et al., Genome Biology 26:287,
#' 2025) with a PyTorch backend reached through reticulate. Start with
#' [sigelExampleData()] and `vignette("sigel")`.
#'
#' @references Li et al. (2025) SIGEL: a context-aware genomic representation
#'   learning framework for spatial genomics analysis. Genome Biology 26:287.
#' @keywords internal
#' @importFrom methods is as new show
"_PACKAGE"

utils::globalVariables(c("col", "row", "value", "PC1", "PC2", "context",
                         "confidence"))
