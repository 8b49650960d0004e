# Where results live on each object, and the accessors that read them.

.store_sce <- function(x, res) {
    genes <- rownames(x)
    ctx <- res$contexts
    pos <- match(genes, rownames(ctx))
    rd <- SummarizedExperiment::rowData(x)
    rd$sigel_context <- as.integer(ctx$context[pos])
    rd$sigel_confidence <- as.numeric(ctx$confidence[pos])
    SummarizedExperiment::rowData(x) <- rd
    se <- res$spot_embeddings
    attr(se, "rotation") <- res$embeddings
    SingleCellExperiment::reducedDim(x, "sigel") <- se
    res$spot_embeddings <- NULL
    S4Vectors::metadata(x)$sigel <- res
    x
}

.store_seurat <- function(x, res, assay) {
    emb <- res$embeddings
    key <- "SIGEL_"
    load <- emb
    colnames(load) <- paste0(key, seq_len(ncol(emb)))
    cell <- res$spot_embeddings
    colnames(cell) <- colnames(load)
    dr <- SeuratObject::CreateDimReducObject(
        embeddings = cell, loadings = load, assay = assay, key = key,
        misc = list(model_path = res$model@path))
    x[["sigel"]] <- dr
    feats <- rownames(x[[assay]])
    pos <- match(feats, rownames(res$contexts))
    x[[assay]][["sigel.context"]] <- as.integer(res$contexts$context[pos])
    x[[assay]][["sigel.confidence"]] <-
        as.numeric(res$contexts$confidence[pos])
    res$spot_embeddings <- NULL
    x@tools[["runSIGEL"]] <- res
    x
}

#' @export
print.SigelResult <- function(x, ...) {
    cat("SigelResult: ", nrow(x$embeddings), " genes x ",
        ncol(x$embeddings), " dims, ", ncol(x$memberships), " contexts",
        if (identical(x$mode, "transform")) " (embedded with a trained model)",
        "\n", sep = "")
    cat("  parts: ", paste(names(x), collapse = ", "), "\n", sep = "")
    cat("  model: ", x$model@path, "\n", sep = "")
    invisible(x)
}

# The result list of any object that carries sigel results.
.sigel_results <- function(x, what = "results") {
    res <- NULL
    if (inherits(x, "SigelResult")) {
        res <- x
    } else if (methods::is(x, "SigelModel") ||
               (is.character(x) && length(x) == 1L)) {
        mdl <- .as_sigel_model(x)
        m <- .sigel_model_py(mdl)
        res <- list(embeddings = .py_df_matrix(m$embeddings_),
                    memberships = .py_df_matrix(m$memberships_),
                    contexts = .py_df(m$contexts_),
                    history = .safe(.py_df(m$history_), "training history"),
                    model = mdl)
    } else if (methods::is(x, "SummarizedExperiment")) {
        res <- S4Vectors::metadata(x)$sigel
    } else if (.is_seurat(x)) {
        res <- x@tools[["runSIGEL"]]
    } else if (is.list(x) && !is.null(x$embeddings) && !is.null(x$model)) {
        res <- x
    } else {
        stop("no sigel ", what, " in an object of class ", class(x)[1],
             "; run runSIGEL() first", call. = FALSE)
    }
    if (is.null(res)) {
        stop("no sigel ", what, " in x: run runSIGEL(x) first",
             call. = FALSE)
    }
    res
}

#' Read SIGEL results from an object
#'
#' Accessors for what [runSIGEL()] stored: gene embeddings (genes x D),
#' soft context memberships (genes x K, rows sum to 1), hard contexts with
#' their confidence, the per-epoch training history and the trained model.
#'
#' @param x an object returned by [runSIGEL()]: a `SingleCellExperiment`
#'   (results in `metadata(x)$sigel`), a `Seurat` object (DimReduc `"sigel"`
#'   and `Tool(x, "runSIGEL")`) or a `SigelResult`; or a [SigelModel-class]
#'   or saved model directory (embeddings, memberships, contexts and history
#'   are read from the model).
#' @return
#' * `sigelEmbeddings()`: numeric matrix, genes x D, gene rownames.
#' * `sigelMemberships()`: numeric matrix, genes x K (columns `context_0`,
#'   ...).
#' * `sigelContexts()`: data.frame with gene rownames and columns `context`
#'   (integer, 0-based as in Python) and `confidence`.
#' * `sigelHistory()`: data.frame, one row per epoch (loss terms, label
#'   change, seconds, ...).
#' * `sigelModel()`: a [SigelModel-class].
#' @seealso [runSIGEL()]
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     dim(sigelEmbeddings(sce))
#'     head(sigelMemberships(sce))
#'     head(sigelContexts(sce))
#'     sigelHistory(sce)
#'     sigelModel(sce)
#' }
#' }
#' @name sigel-accessors
NULL

#' @rdname sigel-accessors
#' @export
sigelEmbeddings <- function(x) {
    res <- .sigel_results(x, "embeddings")
    res$embeddings
}

#' @rdname sigel-accessors
#' @export
sigelMemberships <- function(x) .sigel_results(x, "memberships")$memberships

#' @rdname sigel-accessors
#' @export
sigelContexts <- function(x) .sigel_results(x, "contexts")$contexts

#' @rdname sigel-accessors
#' @export
sigelHistory <- function(x) .sigel_results(x, "history")$history

#' @rdname sigel-accessors
#' @export
sigelModel <- function(x) {
    if (methods::is(x, "SigelModel")) return(x)
    .sigel_results(x, "model")$model
}

# ------------------------------------------------------------------ models

.new_model_dir <- function(model_dir) {
    if (is.null(model_dir)) {
        return(tempfile("sigel-model-", tmpdir = tempdir()))
    }
    if (!is.character(model_dir) || length(model_dir) != 1L) {
        stop("`model_dir` must be one path", call. = FALSE)
    }
    if (file.exists(model_dir)) {
        stop("`model_dir` already exists: ", model_dir, "; choose a new ",
             "folder (or remove it)", call. = FALSE)
    }
    path.expand(model_dir)
}

.read_model_config <- function(path) {
    f <- file.path(path, "config.json")
    if (!file.exists(f)) {
        stop("no saved SIGEL model at ", path, " (no config.json)",
             call. = FALSE)
    }
    cfg <- jsonlite::fromJSON(f, simplifyVector = TRUE)
    res <- cfg$resolved
    list(
        params = cfg$init_params,
        image_options = cfg$image_options,
        fit_params = cfg$fit_params,
        genes = as.character(cfg$genes),
        embed_dim = res$embed_dim,
        n_contexts = res$n_contexts,
        patch_size = res$patch_size,
        epochs_run = cfg$epochs_run,
        stop_reason = cfg$stop_reason,
        fit_seconds = cfg$fit_seconds,
        device_trained = cfg$device_trained,
        versions = cfg$versions)
}

.model_stamp <- function(path) {
    f <- file.path(path, c("config.json", "weights.safetensors"))
    paste(file.mtime(f), file.size(f), collapse = ";")
}

# the files of a saved model directory, as raw vectors named by their path
# relative to the directory (a few hundred kB: config.json + safetensors)
.read_model_files <- function(path) {
    rel <- list.files(path, recursive = TRUE, all.files = TRUE, no.. = TRUE)
    out <- lapply(rel, function(f) {
        full <- file.path(path, f)
        readBin(full, "raw", n = file.size(full))
    })
    names(out) <- rel
    out
}

# write carried model files into `dir` (created)
.write_model_files <- function(files, dir) {
    dir.create(dir, recursive = TRUE, showWarnings = FALSE)
    for (f in names(files)) {
        dest <- file.path(dir, f)
        dir.create(dirname(dest), recursive = TRUE, showWarnings = FALSE)
        writeBin(files[[f]], dest)
    }
    normalizePath(dir)
}

# the R-side SigelModel of a saved directory: path, config and the bytes
.new_sigel_model <- function(path) {
    path <- normalizePath(path, mustWork = TRUE)
    methods::new("SigelModel", path = path,
                 config = .read_model_config(path),
                 files = .read_model_files(path))
}

# does the directory at `path` still hold the carried files?
.model_dir_matches <- function(path, files) {
    if (!dir.exists(path)) return(FALSE)
    if (!length(files)) return(TRUE)
    full <- file.path(path, names(files))
    if (!all(file.exists(full))) return(FALSE)
    if (!all(file.size(full) == vapply(files, length, numeric(1)))) {
        return(FALSE)
    }
    cfg <- "config.json"
    if (cfg %in% names(files)) {
        now <- readBin(file.path(path, cfg), "raw", n = length(files[[cfg]]))
        if (!identical(now, files[[cfg]])) return(FALSE)
    }
    TRUE
}

# A directory holding the model: its saved path when that still holds it,
# else the carried bytes written once per session under tempdir().
.model_path <- function(mdl) {
    if (.model_dir_matches(mdl@path, mdl@files)) {
        return(normalizePath(mdl@path))
    }
    if (!length(mdl@files)) {
        stop("the saved model directory no longer exists: ", mdl@path,
             ", and the model object carries no copy of it (made by an ",
             "older sigel); refit, or point loadSigelModel() to a copy",
             call. = FALSE)
    }
    key <- paste0(mdl@path, "\r", rawToChar(mdl@files[["config.json"]]))
    if (is.null(.sigel_env$restored)) .sigel_env$restored <- list()
    hit <- .sigel_env$restored[[key]]
    if (!is.null(hit) && .model_dir_matches(hit, mdl@files)) return(hit)
    dir <- .write_model_files(mdl@files,
                              tempfile("sigel-model-", tmpdir = tempdir()))
    .sigel_env$restored[[key]] <- dir
    dir
}

# save a fitted Python model, cache it, return the R-side SigelModel
.save_model_py <- function(m, path) {
    .py_call(m$save(path), "could not save the model")
    path <- normalizePath(path, mustWork = TRUE)
    .cache_model(path, m)
    .new_sigel_model(path)
}

.cache_model <- function(path, m) {
    if (is.null(.sigel_env$models)) .sigel_env$models <- list()
    .sigel_env$models[[path]] <- list(model = m, stamp = .model_stamp(path))
    invisible(m)
}

.as_sigel_model <- function(model) {
    if (methods::is(model, "SigelModel")) return(model)
    if (is.character(model) && length(model) == 1L) {
        return(loadSigelModel(model))
    }
    sigelModel(model)
}

#' The Python SIGEL model behind an R object (internal)
#'
#' For task wrappers: returns the Python `sigel.SIGEL` (convert = FALSE) of
#' an object carrying results (SCE, Seurat, SigelResult), a [SigelModel-class]
#' or a model directory. Loaded from the saved directory once per session
#' (then cached); a model fitted in this session keeps its training images in
#' `images_`, a loaded one has `images_ = None` (use `.sigel_images_py()`).
#' @keywords internal
#' @noRd
.sigel_model_py <- function(x) {
    mdl <- .as_sigel_model(x)
    path <- .model_path(mdl)
    hit <- .sigel_env$models[[path]]
    if (!is.null(hit) && identical(hit$stamp, .model_stamp(path))) {
        return(hit$model)
    }
    m <- .py_call(.sigel_py()$SIGEL$load(path),
                  "could not load the SIGEL model")
    .cache_model(path, m)
}

#' Gene images (Python `GeneImages`) of an object, built with the model's
#' image options; for a SigelResult (no data) the fitted model's training
#' images (only available in the session that fitted it).
#' @keywords internal
#' @noRd
.sigel_images_py <- function(x, genes = NULL, ...) {
    m <- .sigel_model_py(x)
    if (inherits(x, "SigelResult") || is.character(x) ||
        methods::is(x, "SigelModel")) {
        imgs <- m$images_
        if (reticulate::py_is_null_xptr(imgs) ||
            inherits(imgs, "python.builtin.NoneType")) {
            stop("the gene images are not available for a loaded model; ",
                 "pass the data (a SingleCellExperiment/Seurat object with ",
                 "sigel results)", call. = FALSE)
        }
        if (!is.null(genes)) imgs <- .py_call(imgs$subset(as.list(genes)))
        return(imgs)
    }
    res <- .sigel_results(x)
    p <- res$params
    ad <- .as_anndata(x, assay = .null_or(p$assay, "counts"),
                      coords = .coords_arg(x, res),
                      library_size = .lib_arg(x, p$library_size),
                      slot = p$slot, image = p$image, ...)
    opts <- reticulate::py_to_r(m$image_options_)
    opts$library_size_key <- if (is.null(p$library_size)) NULL else
        "sigel_library_size"
    opts["library_size_key"] <- list(opts$library_size_key)
    if (!is.null(opts$exclude_prefixes)) {
        opts$exclude_prefixes <- as.list(opts$exclude_prefixes)
    }
    opts$spatial_key <- "spatial"
    if (is.null(genes)) genes <- rownames(res$embeddings)
    gi <- .sigel_py()$GeneImages
    .py_call(do.call(gi$from_anndata,
                     c(list(ad, genes = as.list(as.character(genes))),
                       opts)))
}

# the coordinates used at fit time, as an argument for .as_anndata()
.coords_arg <- function(x, res) {
    cc <- res$params$coords
    if (is.null(cc) || is.character(cc)) return(cc)
    spots <- .spot_names(x)
    miss <- setdiff(spots, rownames(cc))
    if (length(miss)) {
        stop(length(miss), " spots of x have no stored coordinates; pass ",
             "`coords` again", call. = FALSE)
    }
    cc[spots, , drop = FALSE]
}

#' Save and load trained SIGEL models
#'
#' `saveSigelModel()` writes the model behind `x` (the files written by the
#' Python backend: `config.json` and `weights.safetensors`, no pickles;
#' carried inside `x`, so this works after [readRDS()] in a new session) to
#' `path`. `loadSigelModel()` checks a saved directory with the backend and
#' returns a [SigelModel-class] to pass as `runSIGEL(..., model = )`.
#'
#' @param x an object returned by [runSIGEL()] or a [SigelModel-class].
#' @param path `character(1)`: the directory to create / read.
#' @param overwrite `logical(1)`: replace an existing saved model at `path`.
#' @return `saveSigelModel()`: the [SigelModel-class] pointing to `path`,
#'   invisibly. `loadSigelModel()`: a [SigelModel-class].
#' @examples
#' \donttest{
#' if (sigelPythonAvailable()) {
#'     sce <- sigelExampleData()
#'     sce <- sce[order(-Matrix::rowSums(SummarizedExperiment::assay(sce)))[1:60], ]
#'     sce <- runSIGEL(sce, epochs = 2, pretrain_epochs = 1, n_contexts = 3,
#'                     embed_dim = 8, seed = 1, verbose = FALSE)
#'     dir <- file.path(tempdir(), "mob-model")
#'     saveSigelModel(sce, dir, overwrite = TRUE)
#'     model <- loadSigelModel(dir)
#'     model
#'     new <- runSIGEL(sce, model = model, verbose = FALSE)
#'     all.equal(sigelEmbeddings(new), sigelEmbeddings(sce), tolerance = 1e-5)
#' }
#' }
#' @seealso [runSIGEL()], [SigelModel-class]
#' @export
saveSigelModel <- function(x, path, overwrite = FALSE) {
    mdl <- sigelModel(x)
    if (!is.character(path) || length(path) != 1L || is.na(path) ||
        !nzchar(path)) {
        stop("`path` must be one directory path; got ", .fmt_value(path),
             call. = FALSE)
    }
    path <- path.expand(path)
    src <- .model_path(mdl)
    if (file.exists(path)) {
        if (normalizePath(path) == src) return(invisible(mdl))
        if (!isTRUE(overwrite)) {
            stop("`path` already exists: ", path, "; use overwrite = TRUE",
                 call. = FALSE)
        }
        if (!dir.exists(path) ||
            (length(list.files(path, all.files = TRUE, no.. = TRUE)) &&
             !file.exists(file.path(path, "config.json")))) {
            stop("refusing to overwrite ", path, ": it is not a saved SIGEL ",
                 "model", call. = FALSE)
        }
        # remove only the files a saved model consists of (those its manifest
        # lists, or the two model files of an older save): never the
        # directory, never files the model did not write
        own <- c("config.json", "weights.safetensors", "sigel-manifest.json")
        man <- file.path(path, "sigel-manifest.json")
        if (file.exists(man)) {
            listed <- tryCatch(names(jsonlite::fromJSON(man)$files),
                               error = function(e) NULL)
            own <- union(own, basename(listed))
        }
        unlink(file.path(path, own))
    }
    dir.create(path, recursive = TRUE, showWarnings = FALSE)
    files <- list.files(src, full.names = TRUE, all.files = TRUE,
                        no.. = TRUE)
    ok <- file.copy(files, path, recursive = TRUE, overwrite = TRUE)
    if (!all(ok)) stop("could not copy the model to ", path, call. = FALSE)
    invisible(.new_sigel_model(path))
}

#' @rdname saveSigelModel
#' @export
loadSigelModel <- function(path) {
    if (!is.character(path) || length(path) != 1L) {
        stop("`path` must be one directory path", call. = FALSE)
    }
    if (!dir.exists(path)) {
        stop("no saved SIGEL model at ", path, ": the directory does not ",
             "exist", call. = FALSE)
    }
    path <- normalizePath(path)
    m <- .py_call(.sigel_py()$SIGEL$load(path),
                  "could not load the SIGEL model")
    .cache_model(path, m)
    .new_sigel_model(path)
}

.lib_arg <- function(x, lib) {
    if (is.null(lib) || is.character(lib)) return(lib)
    if (!is.null(names(lib)) && all(.spot_names(x) %in% names(lib))) {
        return(unname(lib[.spot_names(x)]))
    }
    lib
}

# what to remember about the input, to rebuild images / AnnData later
.input_params <- function(parts, coords, library_size, spots, ...) {
    if (!is.null(coords) && !is.character(coords)) {
        cc <- parts$coords
        coords <- if (!is.null(cc$obs) && ncol(cc$obs)) {
            data.frame(cc$obs, row.names = spots)
        } else {
            data.frame(X1 = cc$obsm[, 1], X2 = cc$obsm[, 2],
                       row.names = spots)
        }
    }
    if (!is.null(library_size) && !is.character(library_size)) {
        library_size <- stats::setNames(as.numeric(library_size), spots)
    }
    c(list(...), list(coords = coords, where = parts$coords$where,
                      library_size = library_size))
}
