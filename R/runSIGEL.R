# runSIGEL(): one generic, a method per input class, one internal worker
# (.sigel_fit) that is the single training entry into Python.

# The hyper-parameters of the Python model `sigel.SIGEL(...)`, with the same
# names and defaults (kept in sync by tests/testthat/test-runSIGEL.R, which
# compares them with `inspect.signature(sigel.SIGEL)`). Their formals are
# appended to every runSIGEL() method below.
.sigel_hyper <- function(n_contexts = NULL, embed_dim = 32L, patch_size = NULL,
                         max_tokens = 128L, width = 32L, depth = 4L,
                         n_heads = 1L, mlp_ratio = 2, decoder_width = 32L,
                         patch_stem = FALSE, mask_ratio = 0.75, input_norm = "gaussian",
                         smooth_sigma = 2, recon_loss = "mse", epochs = NULL,
                         pretrain_epochs = NULL, batch_size = 32L, lr = 3e-3,
                         weight_decay = 0.05, warmup_epochs = 2L,
                         ema_decay = 0.998,
                         refine = TRUE, scaffold = TRUE, scaffold_k = 10L,
                         scaffold_weight = 3, scaffold_graph = "pca",
                         mixture = "student_t",
                         dirichlet_alpha = 2, contrastive_weight = 1,
                         mixture_weight = 0.1, temperature = 0.1,
                         select_start = 0.3, select_end = 1, em_iters = 5L,
                         tol = 1e-3, amp = FALSE, embed_batch_size = 256L,
                         invariance_weight = 0, view_temperature = 0.1,
                         thin_min = 0.2, spread_weight = 0,
                         denoise = FALSE, rarefy = "auto",
                         rarefy_draws = 4L) NULL

.hyper_names <- function() names(formals(.sigel_hyper))

# Check types in R and convert to what Python expects (ints stay ints).
.py_hyper <- function(hyper) {
    defs <- formals(.sigel_hyper)
    # NULL defaults ("automatic" in Python) are all integer parameters
    nullable <- names(defs)[vapply(defs, is.null, logical(1))]
    nullable <- union(nullable, "rarefy") # rarefy = NULL: full images (a whole number otherwise)
    int_like <- c(nullable, names(defs)[vapply(defs, is.integer, logical(1))])
    out <- list()
    for (nm in names(hyper)) {
        v <- hyper[[nm]]
        if (is.null(v)) {
            if (!nm %in% nullable) {
                .sigel_stop("`", nm, "` must not be NULL")
            }
            out[nm] <- list(NULL)
            next
        }
        if (length(v) != 1L || (is.atomic(v) && is.na(v))) {
            .sigel_stop("`", nm, "` must be a single non-missing value")
        }
        d <- defs[[nm]]
        if (nm == "denoise") {
            if (!(is.logical(v) || identical(v, "split"))) {
                .sigel_stop("`denoise` must be TRUE, FALSE or \"split\"; got ", format(v))
            }
        } else if (nm == "rarefy" && identical(v, "auto")) {
            # the median total count of the training genes, resolved in Python
        } else if (nm %in% int_like) {
            if (!is.numeric(v) || abs(v - round(v)) > 1e-8) {
                .sigel_stop("`", nm, "` must be a whole number; got ", format(v))
            }
            v <- as.integer(round(v))
        } else if (is.logical(d)) {
            if (!is.logical(v)) {
                .sigel_stop("`", nm, "` must be TRUE or FALSE; got ", format(v))
            }
        } else if (is.character(d)) {
            if (!is.character(v)) {
                .sigel_stop("`", nm, "` must be a string; got ", format(v))
            }
        } else if (!is.numeric(v)) {
            .sigel_stop("`", nm, "` must be a number; got ", format(v))
        } else {
            v <- as.numeric(v)
        }
        out[[nm]] <- v
    }
    .check_hyper_relations(out)
    out
}

# constraints between hyper-parameters, checked before Python is called
.check_hyper_relations <- function(h) {
    if (!is.null(h$n_contexts) && h$n_contexts < 2L) {
        .sigel_stop("`n_contexts` must be at least 2 (a mixture of one ",
                    "context groups nothing); got ", h$n_contexts)
    }
    pos <- c("embed_dim", "epochs", "batch_size", "width", "depth",
             "n_heads", "decoder_width", "max_tokens", "em_iters",
             "embed_batch_size", "scaffold_k")
    for (nm in intersect(pos, names(h))) {
        if (!is.null(h[[nm]]) && h[[nm]] < 1L) {
            .sigel_stop("`", nm, "` must be >= 1; got ", h[[nm]])
        }
    }
    if (!is.null(h$pretrain_epochs) && h$pretrain_epochs < 0L) {
        .sigel_stop("`pretrain_epochs` must be >= 0; got ",
                    h$pretrain_epochs)
    }
    if (!is.null(h$pretrain_epochs) && !is.null(h$epochs) &&
        h$pretrain_epochs > h$epochs) {
        .sigel_stop("`pretrain_epochs` (", h$pretrain_epochs, ") must not ",
                    "exceed `epochs` (", h$epochs, "): refinement would ",
                    "never run")
    }
    if (!is.null(h$mask_ratio) && (h$mask_ratio <= 0 || h$mask_ratio >= 1)) {
        .sigel_stop("`mask_ratio` must lie in (0, 1); got ", h$mask_ratio)
    }
    invisible(TRUE)
}

# Run `expr` with the backend's verbosity raised when `verbose`.
.with_verbosity <- function(verbose, expr) {
    if (isTRUE(verbose)) {
        st <- .sigel_py()$settings
        old <- reticulate::py_to_r(st$verbosity)
        st$verbosity <- 2L
        on.exit(st$verbosity <- as.integer(old), add = TRUE)
    }
    force(expr)
}

.check_genes_arg <- function(genes, all_genes) {
    if (is.null(genes)) return(NULL)
    genes <- unique(as.character(genes))
    miss <- setdiff(genes, all_genes)
    if (length(miss)) {
        .sigel_stop(length(miss), " genes in `genes` are not in the data: ",
             .fmt_names(miss, 10))
    }
    if (length(genes) < 2L) .sigel_stop("`genes` must name at least 2 genes")
    genes
}

.image_opts <- function(geometry, image_options) {
    if (!is.list(image_options) ||
        (length(image_options) && (is.null(names(image_options)) ||
                                   any(!nzchar(names(image_options)))))) {
        .sigel_stop("`image_options` must be a named list; got ",
                    .fmt_value(image_options))
    }
    geometry <- match.arg(geometry, c("auto", "visium", "grid", "free"))
    opts <- image_options
    if (is.null(opts$geometry)) opts$geometry <- geometry
    if (!is.null(opts$exclude_prefixes)) {
        opts$exclude_prefixes <- as.list(as.character(opts$exclude_prefixes))
    }
    ints <- intersect(names(opts), c("resolution", "patch_size", "min_spots"))
    for (nm in ints) {
        opts[[nm]] <- .check_number(opts[[nm]], paste0("image_options$", nm),
                                    min = 1, whole = TRUE)
    }
    opts
}

#' The single training entry into Python
#'
#' @param counts genes x spots counts (matrix / dgCMatrix) with dimnames.
#' @param coords list(obs, obsm, where) from the coordinate extractors.
#' @param library_size numeric per spot or NULL.
#' @param genes subset of genes to embed or NULL.
#' @param hyper named list of SIGEL hyper-parameters.
#' @return the result list (see `.collect_results`).
#' @keywords internal
#' @noRd
.sigel_fit <- function(counts, coords, genes = NULL, library_size = NULL,
                       hyper = list(), seed = NULL, device = "auto",
                       verbose = FALSE, n_threads = NULL,
                       image_options = list(), model_dir = NULL) {
    .check_counts(counts)
    genes <- .check_genes_arg(genes, rownames(counts))
    hyper <- .py_hyper(hyper)
    seed <- .check_seed(seed, null_ok = TRUE)
    n_threads <- .check_number(n_threads, "n_threads", min = 1, whole = TRUE,
                               null_ok = TRUE)
    device <- .check_device(device)
    model_dir <- .new_model_dir(model_dir)
    mod <- .sigel_py()
    adata <- .py_call(.anndata_from_parts(counts, coords, library_size))
    m <- .py_call(do.call(mod$SIGEL, hyper))
    fit_args <- c(
        list(adata,
             genes = if (is.null(genes)) NULL else as.list(genes),
             library_size_key = if (is.null(library_size)) NULL else
                 "sigel_library_size",
             device = device, seed = seed, progress = isTRUE(verbose),
             n_threads = n_threads),
        image_options)
    .with_verbosity(verbose, .py_call(do.call(m$fit, fit_args)))
    model <- .save_model_py(m, model_dir)
    res <- .collect_results(m, model)
    res$spot_embeddings <- .spot_embeddings(counts, res$embeddings,
                                            library_size)
    res$mode <- "fit"
    res
}

#' Embed new data with a trained model (Python `transform`; no training)
#' @keywords internal
#' @noRd
.sigel_embed <- function(counts, coords, model, genes = NULL,
                         library_size = NULL, device = "auto",
                         verbose = FALSE, image_options = list(),
                         draws = NULL) {
    .check_counts(counts)
    draws <- .check_draws(draws)
    genes <- .check_genes_arg(genes, rownames(counts))
    device <- .check_device(device)
    mdl <- .as_sigel_model(model)
    m <- .sigel_model_py(mdl)
    # Seurat turns "_" into "-" in feature names: match such genes to the
    # model's names and give the results the data's names again.
    data_genes <- rownames(counts)
    map <- .match_model_genes(data_genes, mdl@config$genes)
    if (length(map)) {
        rownames(counts)[match(names(map), data_genes)] <- unname(map)
        if (!is.null(genes)) genes[genes %in% names(map)] <-
            map[genes[genes %in% names(map)]]
    }
    adata <- .py_call(.anndata_from_parts(counts, coords, library_size))
    opts <- image_options
    opts$library_size_key <- if (is.null(library_size)) NULL else
        "sigel_library_size"
    if (identical(opts$geometry, "auto")) opts$geometry <- NULL
    args <- c(list(adata,
                   genes = if (is.null(genes)) NULL else as.list(genes),
                   device = if (identical(device, "auto")) NULL else device,
                   draws = draws),
              opts)
    # keep an explicit None for library_size_key
    if (!"library_size_key" %in% names(args)) {
        args["library_size_key"] <- list(NULL)
    }
    emb_py <- .with_verbosity(verbose, .py_call(do.call(m$transform, args)))
    mem_py <- .py_call(m$predict_memberships(emb_py))
    ctx_py <- .py_call(m$`_contexts_frame`(mem_py))
    res <- list(
        embeddings = .py_df_matrix(emb_py),
        memberships = .py_df_matrix(mem_py),
        contexts = .py_df(ctx_py),
        history = .safe(.py_df(m$history_), "history"),
        model = mdl)
    if (length(map)) {
        back <- stats::setNames(names(map), unname(map))
        for (nm in c("embeddings", "memberships", "contexts")) {
            rn <- rownames(res[[nm]])
            hit <- rn %in% names(back)
            rn[hit] <- back[rn[hit]]
            rownames(res[[nm]]) <- rn
        }
        rownames(counts) <- data_genes
        message("sigel: matched ", length(map), " genes whose names differ ",
                "only by '_' -> '-' (Seurat renaming) to the model's genes")
    }
    res$spot_embeddings <- .spot_embeddings(counts, res$embeddings,
                                            library_size)
    res$mode <- "transform"
    res
}

.match_model_genes <- function(data_genes, model_genes) {
    if (is.null(model_genes)) return(character())
    model_genes <- as.character(unlist(model_genes))
    miss <- setdiff(data_genes, model_genes)
    if (!length(miss)) return(character())
    alt <- gsub("_", "-", model_genes, fixed = TRUE)
    ok <- alt %in% miss & !model_genes %in% data_genes & !duplicated(alt)
    stats::setNames(model_genes[ok], alt[ok])
}

.check_device <- function(device) {
    if (!is.character(device) || length(device) != 1L ||
        !grepl("^(auto|cpu|mps|cuda(:[0-9]+)?)$", device)) {
        .sigel_stop("`device` must be \"auto\", \"cpu\", \"cuda\", \"cuda:N\" or ",
             "\"mps\"; got ", format(device))
    }
    device
}

.safe <- function(expr, what) {
    tryCatch(expr, error = function(e) {
        warning("could not convert the ", what, " from Python: ",
                conditionMessage(e), call. = FALSE)
        NULL
    })
}

# Everything a fitted Python model gives back, as R objects.
.collect_results <- function(m, model) {
    list(
        embeddings = .py_df_matrix(m$embeddings_),
        memberships = .py_df_matrix(m$memberships_),
        contexts = .py_df(m$contexts_),
        history = .safe(.py_df(m$history_), "training history"),
        mixture = .safe(.mixture_r(m), "mixture parameters"),
        model = model)
}

.mixture_r <- function(m) {
    sd <- m$mixture_$state_dict()
    keys <- .py_chr(reticulate::import_builtins(convert = FALSE)$list(sd$keys()))
    out <- list()
    for (k in keys) {
        out[[k]] <- reticulate::py_to_r(
            sd$`__getitem__`(k)$detach()$cpu()$double()$numpy())
    }
    out
}

# Spots projected on the gene embeddings (Python `sigel.tl.spot_embeddings`:
# log-normalised expression, centred per gene, times the embeddings, divided
# by the number of genes).
.spot_embeddings <- function(counts, emb, library_size = NULL) {
    counts <- .as_dgc(counts)
    a <- .anndata_from_parts(counts[rownames(emb), , drop = FALSE],
                             library_size = if (is.null(library_size))
                                 Matrix::colSums(counts) else library_size)
    S <- .py_df_matrix(.py_call(.sigel_py()$tl$spot_embeddings(
        .emb_py(emb), a, library_size_key = "sigel_library_size",
        key_added = NULL), "spot embeddings"))
    rownames(S) <- colnames(counts)
    S
}

# --------------------------------------------------------------- dispatch

# Shared body of all methods: extract parts, fit or transform, return res.
.run_parts <- function(parts, args) {
    opts <- .image_opts(args$geometry, args$image_options)
    if (!is.null(args$draws) && is.null(args$model)) {
        .sigel_stop("`draws` sets how many depth-matched draws a trained ",
                    "model averages when it embeds new data (`model =`); ",
                    "for a fit use `rarefy_draws`")
    }
    if (!is.null(args$model)) {
        if (!is.null(args$model_dir)) {
            warning("`model_dir` is ignored when `model` is given",
                    call. = FALSE)
        }
        return(.sigel_embed(parts$counts, parts$coords, model = args$model,
                            genes = args$genes,
                            library_size = parts$library_size,
                            device = args$device, verbose = args$verbose,
                            image_options = opts, draws = args$draws))
    }
    .sigel_fit(parts$counts, parts$coords, genes = args$genes,
               library_size = parts$library_size,
               hyper = args[.hyper_names()], seed = args$seed,
               device = args$device, verbose = args$verbose,
               n_threads = args$n_threads, image_options = opts,
               model_dir = args$model_dir)
}

.collect_args <- function(env) {
    nms <- c(.hyper_names(), "genes", "model", "model_dir", "seed", "device",
             "verbose", "n_threads", "geometry", "image_options", "draws")
    mget(nms, envir = env)
}

# append the hyper-parameter formals to a method
.with_hyper <- function(f) {
    formals(f) <- c(formals(f), formals(.sigel_hyper))
    f
}

.run_sce <- .with_hyper(function(x, assay = "counts", coords = NULL,
                                 library_size = NULL, genes = NULL,
                                 model = NULL, model_dir = NULL, seed = NULL,
                                 device = "auto", verbose = interactive(),
                                 n_threads = NULL, geometry = "auto",
                                 image_options = list(), draws = NULL,
                                 ...) {
    .no_dots(...)
    parts <- .input_parts(x, assay = assay, coords = coords,
                          library_size = library_size)
    res <- .run_parts(parts, .collect_args(environment()))
    res$params <- .input_params(parts, coords, library_size,
                                .spot_names(x), assay = assay)
    .store_sce(x, res)
})

.run_matrix <- .with_hyper(function(x, coords, library_size = NULL,
                                    genes = NULL, model = NULL,
                                    model_dir = NULL, seed = NULL,
                                    device = "auto", verbose = interactive(),
                                    n_threads = NULL, geometry = "auto",
                                    image_options = list(), draws = NULL,
                                    ...) {
    .no_dots(...)
    if (missing(coords)) coords <- NULL
    parts <- .input_parts(x, coords = coords, library_size = library_size)
    res <- .run_parts(parts, .collect_args(environment()))
    res$params <- .input_params(parts, coords, library_size,
                                colnames(parts$counts))
    structure(res, class = c("SigelResult", "list"))
})

.run_any <- .with_hyper(function(x, assay = NULL, slot = "counts",
                                 image = NULL, coords = NULL,
                                 library_size = NULL, genes = NULL,
                                 model = NULL, model_dir = NULL, seed = NULL,
                                 device = "auto", verbose = interactive(),
                                 n_threads = NULL, geometry = "auto",
                                 image_options = list(), draws = NULL,
                                 ...) {
    if (!.is_seurat(x)) {
        .sigel_stop("runSIGEL() does not support objects of class ", class(x)[1],
             ": use a SingleCellExperiment, SpatialExperiment, Seurat ",
             "object or a count matrix (genes x spots) with `coords`")
    }
    .no_dots(...)
    .require_seurat()
    assay <- .seurat_assay(x, assay)
    parts <- .input_parts(x, assay = assay, slot = slot, coords = coords,
                          library_size = library_size, image = image)
    res <- .run_parts(parts, .collect_args(environment()))
    res$params <- .input_params(parts, coords, library_size, colnames(x),
                                assay = assay, slot = slot, image = image)
    .store_seurat(x, res, assay)
})

.no_dots <- function(...) {
    dots <- list(...)
    if (length(dots)) {
        nm <- names(dots)
        nm[is.null(nm) | !nzchar(nm)] <- "<unnamed>"
        .sigel_stop("unknown argument(s) to runSIGEL(): ",
             paste(nm, collapse = ", "))
    }
}

#' Learn SIGEL gene embeddings from spatial transcriptomics
#'
#' Builds every gene's expression image on the tissue, trains the SIGEL
#' model (masked autoencoder with a convolutional decoder, Student's t
#' mixture fitted by MAP-EM, self-paced pseudo-contrastive refinement; Li et
#' al. 2025) in the Python backend and returns the input object with the
#' results stored natively. With `model =`, a trained model embeds the genes
#' of new data without retraining.
#'
#' @section Coordinates:
#' One lookup rule, the backend's: coordinates passed explicitly (`coords`)
#' win; otherwise, for a `SingleCellExperiment`, `spatialCoords(x)` (a
#' `SpatialExperiment`) or `reducedDim(x, "spatial")`; otherwise
#' `colData(x)` columns `x`/`y`; otherwise the Visium array columns
#' `array_row`/`array_col`. `colData` columns `array_row`/`array_col`, when
#' present, always travel along: the backend builds Visium's hexagonal
#' images from them. For a Seurat object: the image
#' (`GetTissueCoordinates()`; Visium uses the array row/column), then
#' `meta.data` columns `x`/`y`, then `array_row`/`array_col`. `coords` is a
#' data.frame or matrix with one row per spot (columns `array_row`/
#' `array_col`, `x`/`y`, or any two numeric columns: x then y), a
#' `reducedDim` name, or two `colData`/`meta.data` column names. Free
#' coordinates (e.g. pixels, microns) are rasterised onto a grid whose longest
#' side has `image_options$resolution` (64) pixels.
#'
#' @section Results:
#' * `SingleCellExperiment` / `SpatialExperiment`: `rowData(x)$sigel_context`
#'   (integer, 0-based as in Python; `NA` for genes that were not embedded,
#'   e.g. detected in fewer than 3 spots or mitochondrial) and
#'   `rowData(x)$sigel_confidence`; `reducedDim(x, "sigel")` holds the spots
#'   projected on the gene embeddings (attribute `"rotation"` = the gene
#'   embeddings); `metadata(x)$sigel` is a list with `embeddings` (genes x
#'   D), `memberships` (genes x K), `contexts`, `history`, `mixture`,
#'   `model` (a [SigelModel-class]) and `params`. Read them with
#'   [sigelEmbeddings()], [sigelMemberships()], [sigelContexts()],
#'   [sigelHistory()] and [sigelModel()].
#' * `Seurat`: a `DimReduc` `"sigel"` (key `"SIGEL_"`) whose feature loadings
#'   are the gene embeddings and whose cell embeddings are the spots projected
#'   on them; `sigel.context` and `sigel.confidence` in the assay's feature
#'   meta data; the rest (memberships, history, model) in
#'   `Tool(x, "runSIGEL")`.
#' * matrix input: a `SigelResult` list with the same parts
#'   (`embeddings`, `memberships`, `contexts`, `history`, `mixture`, `model`,
#'   `spot_embeddings`, `params`).
#'
#' Spot projections are the log-normalised expression (library size scaled
#' to the median, `log1p`), centred per gene, times the gene embeddings,
#' divided by the number of genes.
#'
#' The trained model is saved to `model_dir` (default: a new folder under
#' [tempdir()], which disappears with the R session; keep it with
#' [saveSigelModel()]). The R objects hold its path, never a Python object,
#' so they survive [saveRDS()].
#'
#' @param x a `SingleCellExperiment` (or `SpatialExperiment`), a `Seurat`
#'   object, or a count matrix (`matrix` or `dgCMatrix`, genes x spots, with
#'   gene rownames).
#' @param ... for the generic: method arguments. Unknown arguments raise an
#'   error.
#' @param assay `character(1)`: the assay with raw counts (SCE: default
#'   `"counts"`; Seurat: default `DefaultAssay(x)`).
#' @param slot `character(1)`: Seurat slot with the counts (`"counts"`).
#' @param image `character(1)` or `NULL`: the Seurat image to take
#'   coordinates from (needed when there are several).
#' @param coords `NULL` (search, see Coordinates), a data.frame/matrix with one
#'   row per spot, a `reducedDim` name, or two column names. Required for a
#'   matrix.
#' @param library_size `NULL` (column sums of the counts), a numeric vector
#'   with one value per spot, or the name of a `colData`/`meta.data` column
#'   (e.g. `"sum_umi"` when the counts hold a gene subset).
#' @param genes `character` or `NULL`: embed only these genes.
#' @param model `NULL` to train; or a trained model (a [SigelModel-class], a
#'   saved model directory, or an object returned by `runSIGEL()`) to embed
#'   the genes of `x` without retraining (Python `SIGEL.transform`). The
#'   hyper-parameters are then ignored.
#' @param draws with `model =` and a model that reads depth-matched draws
#'   (the default `rarefy = "auto"`): how many draws are averaged into each
#'   gene's vector. `NULL` (default): the model's `rarefy_draws` (4), what
#'   the fit used, so its training genes get back their fitted vectors; a
#'   positive whole number; or `"depth"` (as many as each gene's counts
#'   hold). Fewer draws embed faster and noisier: on DLPFC 151673 one draw
#'   was about 2.5 times faster than four, with two fits' gene--gene
#'   similarities agreeing at r = 0.89 instead of 0.92 (Python
#'   `SIGEL.transform(draws =)`). Only with `model =`.
#' @param model_dir `character(1)` or `NULL`: where to save the trained
#'   model (must not exist); default a new folder under [tempdir()].
#' @param seed `integer(1)` or `NULL`: random seed (`NULL`: the backend's
#'   default seed, `sigel.settings.seed`, 0). On CPU the same seed gives the
#'   same result.
#' @param device `character(1)`: `"auto"` (CUDA, then MPS, then CPU),
#'   `"cpu"`, `"cuda"`, `"cuda:N"` or `"mps"`.
#' @param verbose `logical(1)`: progress bar and log messages from the
#'   backend.
#' @param n_threads `integer(1)` or `NULL`: torch CPU threads during the fit.
#' @param geometry `character(1)`: `"auto"`, `"visium"`, `"grid"` or
#'   `"free"` (how spots become pixels).
#' @param image_options named `list`: further options of the gene images
#'   (Python `GeneImages.from_anndata`), e.g. `resolution` (64), `min_spots`
#'   (3), `exclude_prefixes` (`c("MT-", "ERCC-")`), `log1p`, `scale`,
#'   `target_sum`.
#' @param n_contexts `integer(1)` or `NULL`: number of contexts K (`NULL`:
#'   about one per 30 genes, between 2 and 50).
#' @param embed_dim `integer(1)`: dimension D of the gene vectors.
#' @param patch_size `integer(1)` or `NULL`: patch side in pixels (a power
#'   of two; `NULL`: 4, doubled while the patch grid exceeds `max_tokens`).
#' @param max_tokens `integer(1)`: patch-grid budget for the automatic
#'   `patch_size`.
#' @param width,depth,n_heads,mlp_ratio transformer encoder: token width,
#'   blocks, attention heads and MLP ratio. One head by default (earlier
#'   models used 4 and load with them): the head count moved the gene
#'   vectors less than the seed does, and one head fits and embeds about
#'   1.5x faster on a CPU. `depth = 2L` fits about 1.5x and embeds about
#'   1.6x faster than the default 4 blocks (measured with 4 heads), with
#'   gene vectors about as good on Visium sections but less SVG power on
#'   small tissues (docs/performance.md).
#' @param decoder_width `integer(1)`: channels of the convolutional decoder.
#' @param patch_stem `logical(1)`: Module I's patch embedding. `FALSE`: one
#'   linear map per patch; `TRUE`: two layers (a convolution into as many
#'   channels as the patch holds values, a GELU, a 1x1 convolution to
#'   `width`), at about the same cost. Models saved before this option
#'   existed load with `FALSE`.
#' @param mask_ratio `numeric(1)`: fraction of in-tissue patches masked per
#'   step.
#' @param input_norm `character(1)`: `"gaussian"` (default) averages each
#'   gene image over neighbouring spots (a Gaussian filter of `smooth_sigma`
#'   pixels, tissue only), then centres and scales it over the tissue before
#'   encoding, so vectors describe the pattern's shape rather than how many
#'   spots express the gene or the speckle of a shallow measurement;
#'   `"standardize"` centres and scales without the filter (the earlier
#'   default), `"smooth"` uses a 3x3 box filter, `"rank"` replaces the
#'   filtered values by normal scores of their ranks; `"none"` uses the
#'   image values as built.
#' @param epochs `integer(1)` or `NULL`: maximum number of epochs
#'   (pre-training included); `NULL`: enough for about 4,000 gradient steps,
#'   between 16 and 60 epochs.
#' @param pretrain_epochs `integer(1)` or `NULL`: epochs before refinement
#'   (reconstruction and scaffold terms); `NULL`: half of `epochs`.
#' @param batch_size `integer(1)`: genes per gradient step.
#' @param lr,weight_decay,warmup_epochs AdamW learning rate (warm-up, then
#'   cosine decay to `lr / 20`), weight decay and warm-up length.
#' @param ema_decay `numeric(1)` in \[0, 1): a running average of the
#'   encoder's weights, updated after every gradient step (an exponential
#'   moving average, a "mean teacher"). The averaged encoder computes each
#'   epoch's vectors (those the mixture and the refinement's targets come
#'   from) and is the model returned and saved. It damps the step-to-step
#'   jitter of training: on DLPFC two seeds agree on the gene-gene
#'   similarities at r 0.92 with the default against 0.84 without. `0`
#'   switches it off.
#' @param refine `logical(1)`: run the self-paced refinement (Modules II +
#'   III); `FALSE` is the autoencoder-only ablation.
#' @param scaffold `logical(1)`: use the image kNN similarity scaffold.
#' @param scaffold_k,scaffold_weight neighbours per gene in the scaffold and
#'   the initial weight of its term.
#' @param scaffold_graph `character(1)`: how the scaffold finds neighbours:
#'   `"pca"` (default), cosine on the 50 leading principal axes of the
#'   images after the input filter (`input_norm`, `smooth_sigma`); `"box"`,
#'   correlation of the images after a 3x3 box filter (the default before,
#'   with `scaffold_weight = 1`). On very small grids (about 20 x 20
#'   pixels) the PCA graph groups noise genes: use `scaffold_graph = "box",
#'   scaffold_weight = 1` there.
#' @param mixture `character(1)`: `"student_t"` or `"gaussian"`.
#' @param dirichlet_alpha `numeric(1)`: Dirichlet prior on the mixture
#'   weights (>= 1).
#' @param contrastive_weight,mixture_weight,temperature weights of the
#'   pseudo-contrastive and mixture-likelihood terms, and the contrastive
#'   temperature (of the pseudo-contrastive and scaffold terms; 0.1, before
#'   0.2: more pathway-enriched gene clusters at coarse resolution, less
#'   agreement between seeds without the weight average of `ema_decay`:
#'   0.84-0.90 against 0.94 on DLPFC).
#' @param select_start,select_end self-paced kept fraction of each context's
#'   most confident genes at the start and the end of the ramp.
#' @param em_iters `integer(1)`: MAP-EM iterations per epoch.
#' @param tol `numeric(1)`: stop when fewer than this fraction of genes
#'   change context between epochs.
#' @param amp `logical(1)`: bf16 mixed precision on CUDA.
#' @param embed_batch_size `integer(1)`: genes per inference batch.
#' @param smooth_sigma `numeric(1)`: width in pixels of the Gaussian input
#'   smoothing used when `input_norm = "gaussian"`.
#' @param recon_loss `character(1)`: the masked autoencoder's reconstruction
#'   loss on hidden patches, `"mse"` (squared error) or `"pearson"` (one minus
#'   the per-gene correlation, blind to a gene's background level).
#' @param invariance_weight,view_temperature,thin_min sampling-noise
#'   invariance: two views of each gene made by binomial thinning of its raw
#'   counts (each count kept with a probability drawn from `[thin_min, 1]`)
#'   must give the same vector, against all other genes (InfoNCE at
#'   `view_temperature`); weight 0 switches it off.
#' @param denoise `TRUE`, `FALSE` or `"split"`: what the masked autoencoder
#'   reconstructs. `TRUE`: each gene's image from a binomially thinned copy
#'   of its counts (a shallower measurement of the same pattern) instead of
#'   from the image itself. `"split"` (noise2noise): the counts are split at
#'   random into two disjoint halves and the image of one half is
#'   reconstructed from the image of the other; their sampling noise is
#'   independent, so only the expression pattern can be predicted.
#' @param rarefy `"auto"` (default), a whole number or `NULL`: depth-matched
#'   images. The encoder reads every gene as a fresh rarefied draw, its
#'   counts binomially thinned to at most this many in total (`"auto"`: the
#'   median total count of the training genes), so that how sparse a gene is
#'   no longer tells genes apart. Needs raw counts and one sample per fit:
#'   elsewhere `"auto"` warns and reads the full images, a number stops.
#'   `NULL`: the full images (the earlier default; faster embedding).
#' @param rarefy_draws `integer(1)`: with `rarefy`, how many draws the final
#'   and transformed vectors average over.
#' @param spread_weight `numeric(1)`: weight of the anti-collapse term
#'   (variance and covariance of each batch's vectors, as in VICReg) that
#'   keeps the gene space from folding onto a few directions; 0 (default)
#'   switches it off.
#' @return `x` with the results added (see Results); for a matrix a
#'   `SigelResult` list.
#' @references Li et al. (2025) SIGEL: a context-aware genomic
#'   representation learning framework for spatial genomics analysis. Genome
#'   Biology 26:287.
#' @seealso [sigelEmbeddings()], [plotContexts()], [plotGeneImages()],
#'   [saveSigelModel()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     head(sigelEmbeddings(sce))
#'     table(SummarizedExperiment::rowData(sce)$sigel_context)
#'
#'     # a count matrix with coordinates
#'     m <- SummarizedExperiment::assay(sce, "counts")
#'     res <- runSIGEL(m, coords = SummarizedExperiment::colData(sce)[, c("x", "y")],
#'                     epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     res
#'
#'     # embed with the trained model, no retraining
#'     res2 <- runSIGEL(m, coords = SingleCellExperiment::reducedDim(sce, "spatial"),
#'                      model = sigelModel(sce), verbose = FALSE)
#'     dim(sigelEmbeddings(res2))
#' }
#' }
#' @rdname runSIGEL
#' @export
setMethod("runSIGEL", "SingleCellExperiment", .run_sce)

#' @rdname runSIGEL
#' @export
setMethod("runSIGEL", "matrix", .run_matrix)

#' @rdname runSIGEL
#' @export
setMethod("runSIGEL", "Matrix", .run_matrix)

#' @rdname runSIGEL
#' @export
setMethod("runSIGEL", "ANY", .run_any)
