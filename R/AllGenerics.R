#' @rdname runSIGEL
#' @export
setGeneric("runSIGEL", function(x, ...) standardGeneric("runSIGEL"))
