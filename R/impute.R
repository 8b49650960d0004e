# Imputation for targeted panels: genes a panel did not measure, generated
# from the reference sample's SIGEL embeddings on the panel's own geometry.
# Thin wrappers over the Python task core `sigel.tasks.impute`.

.impute_mod <- function() {
    .sigel_py()
    reticulate::import("sigel.tasks.impute", convert = FALSE)
}

# the reference's training images when x carries data (for the confidence
# score and encoder fine-tuning); NULL when unavailable (model/directory only)
.impute_ref_images <- function(x) {
    if (is.character(x) || methods::is(x, "SigelModel")) return(NULL)
    tryCatch(.sigel_images_py(x), error = function(e) NULL)
}

# the reference (model carrier) given as `x` or as `model`
.reference_arg <- function(x, model) {
    if (is.null(x) == is.null(model)) {
        .sigel_stop("give the reference (an object with runSIGEL() results, ",
                    "a SigelModel or a model directory) as `x` or as ",
                    "`model`, not ", if (is.null(x)) "neither" else "both")
    }
    if (is.null(x)) model else x
}

# extra GAN options (...) checked in R and converted for Python
.impute_gan_options <- function(dots) {
    ok <- c("batch_size", "lr", "adv_start", "hidden", "n_prototypes",
            "channels", "dropout", "embed_noise", "weight_decay",
            "encoder_lr", "pixel_budget", "neighbour_prior")
    if (length(dots) && (is.null(names(dots)) || any(!nzchar(names(dots))))) {
        stop("extra arguments must be named GAN options: ",
             paste(ok, collapse = ", "), call. = FALSE)
    }
    bad <- setdiff(names(dots), ok)
    if (length(bad)) {
        stop("unknown argument(s): ", paste(bad, collapse = ", "),
             "; GAN options are ", paste(ok, collapse = ", "), call. = FALSE)
    }
    ints <- c("batch_size", "hidden", "n_prototypes", "channels",
              "pixel_budget")
    for (nm in names(dots)) {
        v <- dots[[nm]]
        if (nm == "neighbour_prior") {
            dots[[nm]] <- .check_flag(v, nm)
            next
        }
        if (!is.numeric(v) || length(v) != 1L || is.na(v) || v < 0) {
            stop("`", nm, "` must be one non-negative number", call. = FALSE)
        }
        dots[[nm]] <- if (nm %in% ints) {
            .check_number(v, nm, min = 0, whole = TRUE)
        } else {
            as.numeric(v)
        }
    }
    dots
}

.impute_target_py <- function(target, assay, coords, library_size, ...) {
    if (!(methods::is(target, "SingleCellExperiment") || .is_seurat(target) ||
          is.matrix(target) || methods::is(target, "Matrix"))) {
        stop("`target` must be a SingleCellExperiment, a Seurat object or ",
             "a genes x cells count matrix (with `coords`); got ",
             class(target)[1], call. = FALSE)
    }
    .as_anndata(target, assay = assay, coords = coords,
                library_size = library_size, ...)
}

#' Impute genes missing from a targeted panel
#'
#' Imaging assays (MERFISH, osmFISH, Xenium, ...) measure a panel of a few
#' hundred genes; a sequencing-based sample of matched tissue measures the
#' whole transcriptome. `sigelImpute()` takes the SIGEL model fitted on the
#' full-coverage reference (`x`, from [runSIGEL()]) and generates the images
#' of genes the panel (`target`) did not measure, on the target's own
#' geometry (grid / Visium lattice, or free cell coordinates rasterised to
#' `resolution` pixels).
#'
#' With `method = "gan"` a generator maps a gene's embedding to its image on
#' the target; it is trained on the genes both samples measure (matched by
#' name, case-insensitive), with an in-tissue squared-error loss, a small
#' adversarial loss from a conditional projection discriminator, and a
#' memory bank of learned feature prototypes that the generator's hidden
#' code attends over. It is conditioned on the embedding only, so any gene
#' the reference embeds can be generated. `"knn"` averages the target images
#' of the `n_neighbors` measured genes nearest in embedding space (weights =
#' cosine similarity); `"mean"` is the mean image of the measured genes.
#'
#' Values are on the scale of the target's gene images: library-size
#' normalised, `log1p`, divided by each gene's 0.99 in-tissue quantile and
#' clipped to `[0, 1]`, read at each cell's pixel (on free coordinates a
#' pixel holds the mean of its cells). Measured genes keep their measured
#' values.
#'
#' @param x the reference: an object with [runSIGEL()] results (a
#'   `SingleCellExperiment`, `Seurat` object or `SigelResult`), a
#'   [SigelModel-class] or a saved model directory.
#' @param model the same as `x`, by name (`sigelImpute(target = panel,
#'   model = res)`); give one of the two.
#' @param target the panel sample: a `SingleCellExperiment`, a `Seurat`
#'   object, or a genes x cells count matrix with `coords`.
#' @param genes `character` or `NULL`: genes to impute (reference names;
#'   default: every embedded gene the panel lacks).
#' @param method `character(1)`: `"gan"`, `"knn"` or `"mean"`.
#' @param assay,coords,library_size how to read `target` (see
#'   [runSIGEL()]): counts assay (SCE) or assay name (Seurat), coordinates,
#'   library sizes (a vector or a column name).
#' @param geometry `character(1)`: `"auto"`, `"visium"`, `"grid"` or
#'   `"free"` for the target images.
#' @param resolution `integer(1)`: longest image side for free coordinates.
#' @param n_neighbors `integer(1)`: neighbours for `"knn"` and the
#'   confidence score.
#' @param n_steps `integer(1)`: GAN training steps.
#' @param adv_weight `numeric(1)`: weight of the adversarial loss.
#' @param finetune_encoder `logical(1)`: fine-tune a copy of the reference
#'   encoder during training (needs `x` with its data, for the reference
#'   images).
#' @param name `character(1)`: name of the result (altExp / assay).
#' @param seed `integer(1)` or `NULL`: random seed (`NULL`: the backend's
#'   default seed, `sigel.settings.seed`).
#' @param device `character(1)`: `"auto"`, `"cpu"`, `"cuda"`, ...
#' @param n_threads `integer(1)` or `NULL`: torch CPU threads.
#' @param verbose `logical(1)`: progress bar and log messages.
#' @param ... further GAN options: `batch_size`, `lr`, `adv_start`,
#'   `hidden`, `n_prototypes`, `channels`, `dropout`, `embed_noise`,
#'   `weight_decay`, `encoder_lr`, `pixel_budget` (numbers) and
#'   `neighbour_prior` (`TRUE`, the default, or `FALSE`: the generator
#'   refines a read-out of the measured genes' images, weighted by embedding
#'   similarity at a learned temperature, instead of drawing from scratch),
#'   see the Python `sigel.tl.impute`.
#' @return
#' * `SingleCellExperiment` target: the target with an `altExp(target,
#'   name)`: a `SingleCellExperiment` (imputed + measured genes x cells) with
#'   assay `"imputed"` and `rowData` columns `imputed` (logical),
#'   `confidence` (in `[0, 1]`, `NA` for measured genes), `support`,
#'   `reference_signal`, `nearest_measured`, `reference_gene`; run details in
#'   `metadata(altExp(target, name))$sigelImpute`.
#' * `Seurat` target: the target with a new assay `name` (imputed +
#'   measured genes; `data` slot) whose meta.features hold `sigel.imputed`,
#'   `sigel.confidence`, ...; run details in `Tool(target, "sigelImpute")`.
#' * count matrix target: a `SingleCellExperiment` as the altExp above.
#' @references Li et al. SIGEL: a context-aware genomic representation
#'   learning framework for spatial genomics analysis. Genome Biology 26:287
#'   (2025). The generator, discriminator and memory-bank design are this
#'   package's (see the Python module `sigel.model.generator`).
#' @seealso [sigelImputeCV()], [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     top <- order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60]
#'     sce <- sce[top, ]
#'     ref <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     panel <- sce[1:40, ]            # a "panel" lacking 20 genes
#'     panel <- sigelImpute(ref, panel, method = "knn")
#'     imp <- SingleCellExperiment::altExp(panel, "sigel_imputed")
#'     table(SummarizedExperiment::rowData(imp)$imputed)
#' }
#' }
#' @export
sigelImpute <- function(x = NULL, target, genes = NULL,
                        method = c("gan", "knn", "mean"),
                        assay = "counts", coords = NULL, library_size = NULL,
                        geometry = c("auto", "visium", "grid", "free"),
                        resolution = 64L, n_neighbors = 10L, n_steps = 600L,
                        adv_weight = 0.01, finetune_encoder = FALSE,
                        name = "sigel_imputed", seed = NULL, device = "auto",
                        n_threads = NULL, verbose = FALSE, model = NULL,
                        ...) {
    x <- .reference_arg(x, model)
    method <- match.arg(method)
    geometry <- match.arg(geometry)
    if (!is.null(genes) && (!is.character(genes) || anyNA(genes))) {
        stop("`genes` must be NULL or a character vector", call. = FALSE)
    }
    if (!is.character(name) || length(name) != 1L || !nzchar(name)) {
        stop("`name` must be one non-empty string", call. = FALSE)
    }
    list2env(.check_impute_args(resolution, n_neighbors, n_steps, adv_weight,
                                seed, n_threads), environment())
    finetune_encoder <- .check_flag(finetune_encoder, "finetune_encoder")
    gan <- .impute_gan_options(list(...))
    m <- .sigel_model_py(x)
    ref_images <- .impute_ref_images(x)
    ad <- .impute_target_py(target, assay, coords, library_size)
    lib_key <- if (is.null(library_size)) NULL else "sigel_library_size"
    args <- c(list(m, ad, genes = if (is.null(genes)) NULL else as.list(genes),
                   method = method, library_size_key = lib_key,
                   geometry = geometry, resolution = resolution,
                   n_neighbors = n_neighbors, n_steps = n_steps,
                   adv_weight = adv_weight,
                   finetune_encoder = finetune_encoder, device = device,
                   seed = seed, progress = isTRUE(verbose),
                   n_threads = n_threads, reference_images = ref_images),
              gan)
    out <- .with_verbosity(verbose, .py_call(
        do.call(.impute_mod()$impute, args), "sigelImpute"))
    .impute_store(target, out, name)
}

.impute_result_r <- function(out) {
    genes <- .py_chr(out$var_names)
    cells <- .py_chr(out$obs_names)
    mat <- .py_matrix(out$X$T, rownames = genes, colnames = cells)
    var <- .py_df(out$var)
    info <- out$uns$`__getitem__`("sigel_impute")
    details <- list(
        params = reticulate::py_to_r(info$`__getitem__`("params")),
        n_shared = reticulate::py_to_r(info$`__getitem__`("n_shared")),
        unmatched = .py_chr(info$`__getitem__`("unmatched")),
        seconds = reticulate::py_to_r(info$`__getitem__`("seconds")))
    list(mat = mat, var = var, details = details)
}

.impute_store <- function(target, out, name) {
    r <- .impute_result_r(out)
    if (.is_seurat(target)) {
        mat <- methods::as(r$mat, "CsparseMatrix")
        a <- suppressWarnings(SeuratObject::CreateAssayObject(data = mat))
        feats <- rownames(a)
        key <- gsub("_", "-", rownames(r$var), fixed = TRUE)
        pos <- match(feats, key)
        for (nm in c("imputed", "confidence", "support", "reference_signal",
                     "nearest_measured", "reference_gene")) {
            a[[paste0("sigel.", nm)]] <- r$var[[nm]][pos]
        }
        SeuratObject::Key(a) <- "sigelimputed_"
        target[[name]] <- a
        target@tools[["sigelImpute"]] <- r$details
        return(target)
    }
    imp <- SingleCellExperiment::SingleCellExperiment(
        assays = list(imputed = r$mat),
        rowData = S4Vectors::DataFrame(r$var, check.names = FALSE))
    S4Vectors::metadata(imp)$sigelImpute <- r$details
    if (methods::is(target, "SingleCellExperiment")) {
        SummarizedExperiment::colData(imp) <- NULL
        SingleCellExperiment::altExp(target, name) <- imp
        return(target)
    }
    imp
}

#' Cross-validate panel imputation
#'
#' Splits the genes measured by both the reference model and the panel into
#' `k` folds, hides each fold in turn, imputes it from the others and scores
#' it against the measured values with the metrics of Li et al. (2022, Nat
#' Methods): Pearson correlation (PCC), SSIM on max-scaled values, RMSE on
#' z-scored values and Jensen-Shannon divergence on sum-scaled values.
#'
#' @inheritParams sigelImpute
#' @param k `integer(1)`: number of folds (>= 2).
#' @param method `character`: one or more of `"gan"`, `"knn"`, `"mean"`
#'   (all see the same folds).
#' @return A list: `genes`, a data.frame with one row per gene and method
#'   (`gene`, `method`, `fold`, `PCC`, `SSIM`, `RMSE`, `JS`, `confidence`,
#'   `support`, `reference_signal`, `seconds`); `summary`, a data.frame per
#'   method (median metrics, `n_genes` and the rank-based accuracy score
#'   `AS`, higher is better).
#' @references Li B, et al. Benchmarking spatial and single-cell
#'   transcriptomics integration methods for transcript distribution
#'   prediction and cell type deconvolution. Nat Methods 19:662 (2022).
#' @seealso [sigelImpute()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     top <- order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60]
#'     sce <- sce[top, ]
#'     ref <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     cv <- sigelImputeCV(ref, sce, k = 3, method = c("knn", "mean"))
#'     cv$summary
#' }
#' }
#' @export
sigelImputeCV <- function(x = NULL, target, k = 5L, method = "gan",
                          assay = "counts", coords = NULL,
                          library_size = NULL,
                          geometry = c("auto", "visium", "grid", "free"),
                          resolution = 64L, n_neighbors = 10L,
                          n_steps = 600L, adv_weight = 0.01, seed = NULL,
                          device = "auto", n_threads = NULL,
                          verbose = FALSE, model = NULL, ...) {
    x <- .reference_arg(x, model)
    if (!is.character(method) || !length(method) ||
        !all(method %in% c("gan", "knn", "mean"))) {
        stop("`method` must be one or more of \"gan\", \"knn\", \"mean\"",
             call. = FALSE)
    }
    geometry <- match.arg(geometry)
    k <- .check_number(k, "k", min = 2, whole = TRUE)
    list2env(.check_impute_args(resolution, n_neighbors, n_steps, adv_weight,
                                seed, n_threads), environment())
    gan <- .impute_gan_options(list(...))
    m <- .sigel_model_py(x)
    ref_images <- .impute_ref_images(x)
    ad <- .impute_target_py(target, assay, coords, library_size)
    lib_key <- if (is.null(library_size)) NULL else "sigel_library_size"
    mod <- .impute_mod()
    args <- c(list(m, ad, k = k, method = as.list(unique(method)),
                   library_size_key = lib_key, geometry = geometry,
                   resolution = resolution, n_neighbors = n_neighbors,
                   n_steps = n_steps, adv_weight = adv_weight,
                   device = device, seed = seed,
                   progress = isTRUE(verbose), n_threads = n_threads,
                   reference_images = ref_images), gan)
    cv <- .with_verbosity(verbose, .py_call(do.call(mod$impute_cv, args),
                                            "sigelImputeCV"))
    summ <- .py_df(mod$impute_summary(cv))
    genes <- .py_df(cv$reset_index())
    summ <- data.frame(method = rownames(summ), summ, row.names = NULL,
                       check.names = FALSE)
    list(genes = genes, summary = summ)
}

# The numeric arguments sigelImpute() and sigelImputeCV() share, checked once.
.check_impute_args <- function(resolution, n_neighbors, n_steps, adv_weight,
                               seed, n_threads) {
    list(
        resolution = .check_number(resolution, "resolution", min = 2,
                                   whole = TRUE),
        n_neighbors = .check_number(n_neighbors, "n_neighbors", min = 1,
                                    whole = TRUE),
        n_steps = .check_number(n_steps, "n_steps", min = 1, whole = TRUE),
        adv_weight = .check_number(adv_weight, "adv_weight", min = 0),
        seed = .check_seed(seed, null_ok = TRUE),
        n_threads = .check_number(n_threads, "n_threads", min = 1,
                                  whole = TRUE, null_ok = TRUE))
}
