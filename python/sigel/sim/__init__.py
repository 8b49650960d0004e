"""Pseudo-gene simulator: designated patterns and spatially homogeneous controls.

One semantics, two engines: ``engine="numpy"`` (here) and ``engine="r"``
(the R package's ``simulatePattern()`` / ``simulateHomogeneous()``, called
through rpy2). Both follow exactly the recipe below, so they agree in
distribution (the random streams differ).

Pattern mode (`pseudo_gene`)
----------------------------
1. **Template -> region weights** ``W`` (spots x regions, rows sum to 1).
   A template is one value per spot or an image:

   - labels (strings, integers, categorical) -> one region per label
     (one-hot rows);
   - booleans, or numbers that are all 0/1 -> regions ``"background"``
     (False) and ``"pattern"`` (True);
   - other numbers in [0, 1] -> a continuous pattern ``w``: regions
     ``"background"`` and ``"pattern"`` with weights ``(1 - w, w)``;
   - a 2-D array (a mask or label image) is first read at every spot: the
     spot coordinates are scaled to [0, 1] per axis (x -> image column,
     y -> image row) and the nearest pixel is taken.

2. **Size factors** ``sf`` (mean 1): each spot's library size (row sums
   of the calibration counts, or ``library_size``) divided by its mean; 1
   without either. Spots with ``sf = 0`` are left out of the calibration
   (steps 3 and 6, and `fit_zinb`) and get mean 0.
3. **Region means** ``m_r``: explicit (``means``) or, with ``quantiles``,
   the ``q_r`` quantile (type 7, as ``numpy.quantile`` and R's default) over
   the observed genes (those with any count) of their mean size-factor-
   normalised count in region ``r``. A spot belongs to the region of its
   largest weight (``w >= 0.5`` -> ``"pattern"`` for continuous templates).
4. **Tapered edges** (``taper > 0``): ``W <- K W / rowSums(K)`` with a
   Gaussian kernel ``K_st = exp(-d_st^2 / (2 s^2))`` truncated at ``d <= 3s``,
   ``s = taper x`` the median nearest-neighbour distance between spots (so
   ``taper`` is in spot spacings, whatever the coordinate units).
5. **Mean per spot**: ``mu_s = sf_s * sum_r W_sr m_r``.
6. **Mean-dispersion trend** ``CV^2 = a0 + a1 / mu``, fitted to the observed
   genes (mean ``mu_g`` and variance ``v_g`` of the size-factor-normalised
   counts of genes with ``mu_g > 0, v_g > 0``) as a gamma GLM with identity
   link (iteratively reweighted least squares, weights ``1 / fit^2``, 25
   iterations; Brennecke et al. 2013), then ``a0, a1`` clipped at 0. Without
   calibration counts ``trend`` (default ``(0.1, 1.0)``) is used.
7. **Counts**: negative binomial with mean ``mu_s`` and variance
   ``a0 mu^2 + a1 mu``, i.e. size ``theta = 1 / (a0 + (a1 - 1) / mu_s)``;
   Poisson where ``a0 + (a1 - 1) / mu_s <= 1e-8`` (no over-dispersion left).

Homogeneous mode (`homogeneous`)
--------------------------------
Each gene's own marginal, a zero-inflated negative binomial fitted by the
method of moments (vectorised over genes; `fit_zinb`), shuffled over the
tissue: controls are drawn independently at every spot. By default the
marginal is that of the raw counts (``sf = 1``: a pure shuffle, the null of
"no spatial structure in the counts", as SPARK-X tests it); with
``library_size`` the controls keep each spot's depth instead
(``y_s ~ ZINB(pi, sf_s mu, theta)``, moments taken on ``y / sf``). With
``m``, ``v`` the mean and variance of ``y / sf``, ``p0`` the observed
fraction of zeros and ``c = mean(1 / sf)``, for a zero-inflation ``pi`` the
NB mean is ``mu = m / (1 - pi)`` and its over-dispersion
``1/theta = (v / (1 - pi) - c mu) / mu^2 - pi`` (clipped at 0: Poisson);
``pi`` solves ``pi + (1 - pi) NB0(mu, theta) = p0`` by bisection (``pi = 0``
when the negative binomial alone has enough zeros). These are the spatially
homogeneous controls of `sigel.tl.svg`.

Template builders (`layers`, `core`, `ring`, `crescent`, `interface`,
`checkerboard`, `from_mask`) return one value per spot. Geometric ones
work on coordinates scaled to [0, 1] per axis (``u`` = x, ``v`` = y, as
``obs['u','v']`` of `sigel.datasets.synthetic_tissue`).

Modules
-------
`sigel.sim.templates` (template builders, template -> region weights),
`sigel.sim.patterned` (pattern mode: `pseudo_gene` and its calibration),
`sigel.sim.nulls` (homogeneous mode: `homogeneous`, `permuted`, `fit_zinb`,
`size_factors`) and `sigel.sim.images` (pseudo-gene images on a model's
grid); every public name is available here as ``sigel.sim.<name>``.
"""
from __future__ import annotations

from .images import LIB_COLUMN, pseudo_images, real_library_size
from .nulls import fit_zinb, homogeneous, permuted, size_factors
from .patterned import DEFAULT_TREND, fit_trend, pseudo_gene, region_means
from .templates import (
    BACKGROUND, PATTERN, checkerboard, core, crescent, from_mask, interface, layers, region_weights, ring,
)

__all__ = [
    "pseudo_gene", "homogeneous", "permuted", "fit_zinb", "fit_trend", "region_weights", "region_means",
    "size_factors", "pseudo_images", "layers", "core", "ring", "crescent", "interface",
    "checkerboard", "from_mask",
]
