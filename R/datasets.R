#' The bundled mouse olfactory bulb data set
#'
#' Replicate 11 of the mouse olfactory bulb (Ståhl et al. 2016, legacy
#' spatial transcriptomics, 262 spots): raw counts of the 2,000 most
#' variable genes (variance of library-size-normalised counts) among the
#' 12,947 detected in at least 10 spots, with grid coordinates and the 5
#' annotated layers. The full data set is
#' `sigel.datasets.mouse_olfactory_bulb()` in Python; this is an exact
#' subset of it (same spots, same counts), kept small so that the R package
#' installs in under 5 MB.
#'
#' @return A `SingleCellExperiment` (2,000 genes x 262 spots) with a
#'   `counts` assay (`dgCMatrix`), `colData` columns `x`, `y`, `layer`,
#'   `in_MOB_sample_info`, `total_counts` (the library size over all measured
#'   genes: pass `library_size = "total_counts"` to [runSIGEL()] to
#'   normalise by it rather than by the 2,000 genes' sum), and
#'   `reducedDim(x, "spatial")`.
#' @references Ståhl PL et al. (2016) Visualization and analysis of gene
#'   expression in tissue sections by spatial transcriptomics. Science
#'   353(6294):78-82.
#' @examples
#' sce <- sigelExampleData()
#' dim(sce)
#' @export
sigelExampleData <- function() {
    d <- system.file("extdata", "mob", package = "sigel", mustWork = TRUE)
    con <- gzfile(file.path(d, "counts.mtx.gz"))
    counts <- methods::as(Matrix::readMM(con), "CsparseMatrix")
    genes <- utils::read.delim(file.path(d, "genes.tsv.gz"))$gene
    spots <- utils::read.delim(file.path(d, "spots.tsv.gz"),
                               check.names = FALSE, stringsAsFactors = FALSE)
    rownames(spots) <- spots$spot
    spots$spot <- NULL
    spots$layer <- factor(spots$layer_annotation)
    spots$layer_annotation <- NULL
    spots$in_MOB_sample_info <- as.logical(spots$in_MOB_sample_info)
    counts <- methods::as(counts, "dgCMatrix")
    dimnames(counts) <- list(genes, rownames(spots))
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = counts),
        colData = S4Vectors::DataFrame(spots, check.names = FALSE)
    )
    SingleCellExperiment::reducedDim(sce, "spatial") <-
        as.matrix(spots[, c("x", "y")])
    S4Vectors::metadata(sce)$citation <- paste(
        "Stahl PL et al. (2016) Science 353(6294):78-82;",
        "mouse olfactory bulb replicate 11")
    sce
}
