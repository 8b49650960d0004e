# Small fixtures shared by the R tests (tiny data, tiny models: seconds).

# The bundled MOB data restricted to its `n_genes` most expressed genes.
sigel_tiny_sce <- function(n_genes = 60L) {
    sce <- sigel::sigelExampleData()
    tot <- Matrix::rowSums(SummarizedExperiment::assay(sce, "counts"))
    sce[order(-tot)[seq_len(n_genes)], ]
}

# Hyper-parameters of a model that trains in about a second.
sigel_tiny_hyper <- function() {
    list(epochs = 2L, pretrain_epochs = 1L, n_contexts = 3L, embed_dim = 8L,
         width = 16L, depth = 1L, n_heads = 2L, decoder_width = 8L,
         batch_size = 32L)
}

# One fitted tiny SCE per test session (memoised).
.sigel_test_cache <- new.env(parent = emptyenv())
sigel_tiny_fit <- function() {
    if (is.null(.sigel_test_cache$sce)) {
        args <- c(list(sigel_tiny_sce()), sigel_tiny_hyper(),
                  list(seed = 1L, verbose = FALSE, n_threads = 1L))
        .sigel_test_cache$sce <- do.call(sigel::runSIGEL, args)
    }
    .sigel_test_cache$sce
}

# A Seurat (v4) object with a VisiumV1 image built by hand (no files):
# array rows/cols on a hexagonal lattice (row + col even).
sigel_fake_visium <- function(counts, row = NULL, col = NULL) {
    S <- ncol(counts)
    if (is.null(row)) row <- (seq_len(S) - 1L) %/% 3L
    if (is.null(col)) col <- 2L * ((seq_len(S) - 1L) %% 3L) + row %% 2L
    so <- suppressWarnings(SeuratObject::CreateSeuratObject(
        methods::as(counts, "CsparseMatrix"), assay = "Spatial"))
    coords <- data.frame(tissue = 1L, row = row, col = col,
                         imagerow = row * 100, imagecol = col * 50,
                         row.names = colnames(counts))
    cls <- methods::getClass("VisiumV1", where = asNamespace("Seurat"))
    img <- methods::new(cls, image = array(0, c(2, 2, 3)),
                        scale.factors = Seurat::scalefactors(
                            spot = 1, fiducial = 1, hires = 1, lowres = 1),
                        coordinates = coords, spot.radius = 0.01,
                        assay = "Spatial", key = "slice1_")
    so[["slice1"]] <- img
    so
}
