library(testthat)
library(sigel)
test_check("sigel")
