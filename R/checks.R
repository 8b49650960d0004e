# Argument checks shared by every exported function: each error names the
# argument, what was expected and what was given, and is an R condition of
# class "sigel_input_error" (raised in R, before Python is called).

# Raise a classed input error (message pasted from `...`).
.sigel_stop <- function(...) {
    msg <- paste0(...)
    cond <- structure(
        class = c("sigel_input_error", "error", "condition"),
        list(message = msg, call = NULL))
    stop(cond)
}

# A short description of a value as given: `"big"`, `2.5`, `NULL`,
# `c(0.9, 0.5)`, `NA`, `<list of length 2>`, `<data.frame 3 x 2>`.
.fmt_value <- function(v, n = 5L) {
    if (is.null(v)) return("NULL")
    if (is.function(v)) return("<function>")
    if (is.data.frame(v) || is.matrix(v)) {
        return(paste0("<", class(v)[1], " ", nrow(v), " x ", ncol(v), ">"))
    }
    if (!is.atomic(v)) {
        return(paste0("<", class(v)[1], " of length ", length(v), ">"))
    }
    if (!length(v)) return(paste0(typeof(v), "(0)"))
    shown <- utils::head(v, n)
    txt <- if (is.character(shown)) {
        ifelse(is.na(shown), "NA", paste0("\"", shown, "\""))
    } else if (is.factor(shown)) {
        paste0("\"", as.character(shown), "\"")
    } else {
        vapply(shown, function(e) format(e, digits = 7L), character(1))
    }
    nms <- names(shown)
    if (!is.null(nms)) txt <- ifelse(nzchar(nms), paste0(nms, " = ", txt), txt)
    if (length(v) > n) txt <- c(txt, "...")
    if (length(v) == 1L && is.null(nms)) return(txt)
    paste0("c(", paste(txt, collapse = ", "), ")")
}

.range_text <- function(min, max) {
    if (is.finite(min) && is.finite(max)) {
        return(paste0(" in [", format(min), ", ", format(max), "]"))
    }
    if (is.finite(min)) return(paste0(" >= ", format(min)))
    if (is.finite(max)) return(paste0(" <= ", format(max)))
    ""
}

#' Check one number (the single argument checker of the R layer)
#'
#' @param v the value given.
#' @param name the argument's name (for the message).
#' @param min,max allowed range (inclusive).
#' @param whole require a whole number; it is returned as an integer.
#' @param null_ok accept `NULL` (returned as is).
#' @return `v` as a double, or as an integer when `whole`.
#' @keywords internal
#' @noRd
.check_number <- function(v, name, min = -Inf, max = Inf, whole = FALSE,
                          null_ok = FALSE) {
    if (is.null(v) && null_ok) return(NULL)
    ok <- is.numeric(v) && length(v) == 1L && !is.na(v)
    if (ok && whole) {
        ok <- is.finite(v) && abs(v - round(v)) <= 1e-8 &&
            abs(v) <= .Machine$integer.max
    }
    if (ok) ok <- v >= min && v <= max
    if (!ok) {
        .sigel_stop("`", name, "` must be ",
                    if (whole) "a whole number" else "one number",
                    .range_text(min, max),
                    if (null_ok) " or NULL", "; got ", .fmt_value(v))
    }
    if (whole) as.integer(round(v)) else as.numeric(v)
}

# a seed: a whole number in [0, 2^31 - 1] (NULL allowed when null_ok)
.check_seed <- function(v, name = "seed", null_ok = FALSE) {
    .check_number(v, name, min = 0, whole = TRUE, null_ok = null_ok)
}

# TRUE or FALSE
.check_flag <- function(v, name, null_ok = FALSE) {
    if (is.null(v) && null_ok) return(NULL)
    if (!is.logical(v) || length(v) != 1L || is.na(v)) {
        .sigel_stop("`", name, "` must be TRUE or FALSE; got ", .fmt_value(v))
    }
    v
}

# one non-empty string
.check_string <- function(v, name, null_ok = FALSE) {
    if (is.null(v) && null_ok) return(NULL)
    if (!is.character(v) || length(v) != 1L || is.na(v) || !nzchar(v)) {
        .sigel_stop("`", name, "` must be one non-empty string; got ",
                    .fmt_value(v))
    }
    v
}
