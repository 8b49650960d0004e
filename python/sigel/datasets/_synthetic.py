"""Synthetic tissue with planted spatial pattern families (tests and quality checks)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validate import SigelInputError, assert_in_range, assert_one_of, assert_positive

FAMILIES = ("layer_top", "layer_bottom", "blobs", "gradient", "checkerboard", "ring", "crescent", "spots")


def _pattern(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pattern family ``name`` evaluated at tissue coordinates (u, v) in [0, 1]; values in [0, 1]."""
    def band(x, lo, hi, w=0.05):
        return 1.0 / (1 + np.exp(-(x - lo) / w)) * 1.0 / (1 + np.exp((x - hi) / w))

    if name == "layer_top":
        return band(v, 0.12, 0.38)
    if name == "layer_bottom":
        return band(v, 0.62, 0.88)
    if name == "blobs":
        c = [(0.3, 0.5), (0.72, 0.35)]
        return np.clip(sum(np.exp(-((u - a) ** 2 + (v - b) ** 2) / (2 * 0.09**2)) for a, b in c), 0, 1)
    if name == "gradient":
        return np.clip(u, 0, 1)
    if name == "checkerboard":
        return ((np.floor(u * 3) + np.floor(v * 3)) % 2).astype(float)
    if name == "ring":
        r = np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2)
        return np.exp(-((r - 0.3) ** 2) / (2 * 0.05**2))
    if name == "crescent":
        r = np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2)
        return np.exp(-((r - 0.38) ** 2) / (2 * 0.05**2)) * (u < 0.5)
    if name == "spots":
        c = [(0.25, 0.25), (0.75, 0.75), (0.25, 0.75)]
        return np.clip(sum(np.exp(-((u - a) ** 2 + (v - b) ** 2) / (2 * 0.05**2)) for a, b in c), 0, 1)
    raise SigelInputError(f"unknown pattern family {name!r}; choose from {FAMILIES}")


def family_patterns(u, v, n_families: int = 5) -> dict:
    """The planted pattern of each family at tissue coordinates (u, v) (for checks and templates)."""
    rng = np.random.default_rng(0)
    return {f: _pattern(f, np.asarray(u), np.asarray(v), rng) for f in FAMILIES[:n_families]}


def synthetic_tissue(
    n_genes: int = 200,
    *,
    n_families: int = 5,
    frac_pattern_free: float = 0.2,
    shape: tuple[int, int] = (30, 30),
    geometry: str = "grid",
    n_cells: int | None = None,
    depth: float = 2000.0,
    fold_change: float = 8.0,
    dispersion: float = 5.0,
    noise: float = 0.3,
    rotate: float = 0.0,
    scale: float = 1.0,
    switch_fraction: float = 0.0,
    seed: int = 0,
    sample_seed: int | None = None,
):
    """Simulate a tissue section with planted gene pattern families.

    Genes belong to a pattern family (layers, blobs, a gradient, a
    checkerboard, a ring, a crescent, spots) or are pattern-free. A family
    gene's mean is ``base * (1 + (fold_change - 1) * pattern)`` times spot
    library size, with per-gene multiplicative log-normal noise; counts are
    negative binomial. Gene base levels are drawn independently of family,
    so expression level does not reveal the family.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_families
        Number of pattern families used (at most 8).
    frac_pattern_free
        Fraction of genes with no spatial pattern (``var['family'] == 'none'``).
    shape
        ``(rows, cols)`` of the spot lattice (grid/visium) or the image-space
        aspect for free coordinates. The tissue is the inscribed ellipse.
    geometry
        ``'grid'`` (``obs['x','y']``), ``'visium'`` (``obs['array_row',
        'array_col']`` on a hexagonal lattice) or ``'free'`` (random cells,
        ``obsm['spatial']`` only).
    n_cells
        Number of cells for ``'free'`` (default ``4 * rows * cols``).
    depth
        Mean library size per spot.
    fold_change
        Expression ratio between a pattern's peak and its background.
    dispersion
        Negative binomial size (smaller = noisier).
    noise
        SD of per-gene-per-spot log-normal noise on the mean.
    rotate, scale
        Rotation (degrees) and zoom of the tissue relative to the lattice:
        the same genes and patterns seen in a differently placed section.
    switch_fraction
        Fraction of patterned genes that change to another family (a planted
        "disease" change); recorded in ``var['switched']``.
    seed
        Seeds gene names, base levels and family assignments (keep it equal
        across samples that should share genes and families).
    sample_seed
        Seeds spot placement, noise and counts (default: ``seed``).

    Returns
    -------
    AnnData
        Spots x genes raw counts (CSR), ``var['family']``, ``var['base']``,
        ``var['switched']``, ``obs['u','v']`` (tissue coordinates),
        ``obs['domain']`` (which of 4 horizontal bands of the tissue a spot is
        in), ``obsm['spatial']`` and the geometry's coordinate columns.
    """
    import anndata as ad

    assert_one_of("geometry", geometry, ("grid", "visium", "free"))
    assert_in_range("n_families", n_families, 1, len(FAMILIES))
    assert_in_range("frac_pattern_free", frac_pattern_free, 0.0, 1.0)
    assert_in_range("switch_fraction", switch_fraction, 0.0, 1.0)
    assert_positive("n_genes", n_genes)
    assert_positive("depth", depth)
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 3 or cols < 3:
        raise SigelInputError(f"shape must be at least (3, 3); got {shape}")
    gene_rng = np.random.default_rng([seed, 1])
    srng = np.random.default_rng([seed if sample_seed is None else sample_seed, 2])

    # ---- spots in image space (x, y in [0, 1]) ----
    if geometry == "free":
        n = int(n_cells or 4 * rows * cols)
        pts = srng.uniform(0, 1, size=(3 * n, 2))
        inside = ((pts[:, 0] - 0.5) ** 2 + (pts[:, 1] - 0.5) ** 2) <= 0.25
        pts = pts[inside][:n]
        x, y = pts[:, 0], pts[:, 1]
    else:
        ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        ii, jj = ii.ravel(), jj.ravel()
        xoff = 0.5 * (ii % 2) if geometry == "visium" else 0.0
        x = (jj + xoff + 0.5) / (cols + 0.5)
        y = (ii + 0.5) / rows
        inside = ((x - 0.5) ** 2 + (y - 0.5) ** 2) <= 0.25
        x, y, ii, jj = x[inside], y[inside], ii[inside], jj[inside]
    # tissue coordinates: undo the section's rotation / zoom about the centre
    th = np.deg2rad(rotate)
    dx, dy = (x - 0.5) / scale, (y - 0.5) / scale
    u = 0.5 + np.cos(th) * dx + np.sin(th) * dy
    v = 0.5 - np.sin(th) * dx + np.cos(th) * dy
    n_spots = len(x)

    # ---- genes ----
    fams = list(FAMILIES[:n_families])
    n_free = int(round(frac_pattern_free * n_genes))
    n_pat = n_genes - n_free
    family = np.array([fams[i % n_families] for i in range(n_pat)] + ["none"] * n_free, dtype=object)
    base = np.exp(gene_rng.normal(np.log(0.5), 0.8, size=n_genes)) / 100.0  # fraction of library
    switched = np.zeros(n_genes, dtype=bool)
    n_switch = int(round(switch_fraction * n_pat))
    if n_switch and n_families > 1:
        sw = gene_rng.choice(n_pat, size=n_switch, replace=False)
        for g in sw:
            others = [f for f in fams if f != family[g]]
            family[g] = others[gene_rng.integers(len(others))]
        switched[sw] = True
    names = np.array([f"gene{i:05d}" for i in range(n_genes)], dtype=object)

    rng0 = np.random.default_rng(0)
    pats = {f: _pattern(f, u, v, rng0) for f in fams}
    P = np.ones((n_genes, n_spots)) * 0.35  # pattern-free genes: flat mid level
    for f in fams:
        sel = family == f
        P[sel] = pats[f][None, :]
    lib = depth * np.exp(srng.normal(0, 0.2, size=n_spots))
    mu = base[:, None] * (1.0 + (fold_change - 1.0) * P) / (1.0 + (fold_change - 1.0) * 0.35) * lib[None, :]
    mu = mu * np.exp(srng.normal(0, noise, size=mu.shape) - noise**2 / 2)
    counts = srng.negative_binomial(dispersion, dispersion / (dispersion + mu))

    obs = pd.DataFrame({"u": u, "v": v}, index=[f"spot{i:05d}" for i in range(n_spots)])
    obs["domain"] = pd.Categorical(np.clip((v * 4).astype(int), 0, 3).astype(str))
    if geometry == "grid":
        obs["x"], obs["y"] = jj.astype(float), ii.astype(float)
        spatial = np.column_stack([jj, ii]).astype(float)
    elif geometry == "visium":
        obs["array_row"], obs["array_col"] = ii, 2 * jj + (ii % 2)
        spatial = np.column_stack([x, y]) * 100.0
    else:
        spatial = np.column_stack([x, y]) * 1000.0
    var = pd.DataFrame({"family": pd.Categorical(family, categories=fams + ["none"]), "base": base,
                        "switched": switched}, index=names)
    adata = ad.AnnData(X=sp.csr_matrix(counts.T.astype(np.float32)), obs=obs, var=var)
    adata.obsm["spatial"] = spatial
    adata.uns["synthetic"] = dict(seed=seed, geometry=geometry, shape=[rows, cols], rotate=rotate, scale=scale,
                                  n_families=n_families, fold_change=fold_change, dispersion=dispersion)
    return adata
