"""sigel.tissue: one coordinate rule, one counts reader, one spot graph, one Moran's I."""
from __future__ import annotations

import hashlib
import logging
import math
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sigel
from sigel import SigelInputError, tissue
from sigel.data import GeneImages
from sigel.data.images import detect_geometry


def _toy(n=40, g=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, size=(n, g)).astype(np.float32)
    a = ad.AnnData(X, obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    return a


def _digest(a) -> str:
    h = hashlib.sha256()
    X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(pd.util.hash_pandas_object(a.obs, index=True).to_numpy().tobytes())
    for k in sorted(a.obsm.keys()):
        h.update(k.encode() + np.ascontiguousarray(a.obsm[k]).tobytes())
    h.update(repr(sorted(a.obsp.keys())).encode() + repr(sorted(a.uns.keys())).encode())
    return h.hexdigest()


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def sigel_log():
    h = _Capture()
    log = logging.getLogger("sigel")
    before = sigel.settings.verbosity
    log.addHandler(h)
    sigel.settings.verbosity = 2
    yield h.messages
    sigel.settings.verbosity = before
    log.removeHandler(h)


# ------------------------------------------------------------ coordinate rule
def test_coordinate_rule_obsm_then_obs_xy_then_array(sigel_log):
    a = _toy(6)
    a.obsm["spatial"] = np.arange(12, dtype=float).reshape(6, 2)
    a.obs["x"], a.obs["y"] = np.full(6, -1.0), np.full(6, -2.0)
    a.obs["array_row"], a.obs["array_col"] = [0, 0, 0, 1, 1, 1], [0, 2, 4, 1, 3, 5]
    np.testing.assert_array_equal(tissue.coordinates(a), a.obsm["spatial"])
    assert any("adata.obsm['spatial']" in m for m in sigel_log)
    a.obsm["other"] = a.obsm["spatial"] * 10
    np.testing.assert_array_equal(tissue.coordinates(a, "other"), a.obsm["other"])   # explicit key wins
    with pytest.raises(SigelInputError, match="spatial_key 'missing' not found in adata.obsm"):
        tissue.coordinates(a, "missing")                                              # never falls back
    del a.obsm["spatial"]
    sigel_log.clear()
    np.testing.assert_array_equal(tissue.coordinates(a), np.column_stack([np.full(6, -1.0), np.full(6, -2.0)]))
    assert any("adata.obs[['x', 'y']]" in m for m in sigel_log)
    a.obs = a.obs.drop(columns=["x", "y"])
    xy = tissue.coordinates(a)
    np.testing.assert_allclose(xy[:, 0], [0, 2, 4, 1, 3, 5])
    np.testing.assert_allclose(xy[:, 1], np.array([0, 0, 0, 1, 1, 1]) * math.sqrt(3))
    # hexagonal lattice: every in-lattice neighbour is at distance 2
    d = np.linalg.norm(xy[0] - xy[3]), np.linalg.norm(xy[0] - xy[1])
    assert d[0] == pytest.approx(2.0) and d[1] == pytest.approx(2.0)
    a.obs = a.obs.drop(columns=["array_row", "array_col"])
    with pytest.raises(SigelInputError, match="no spatial coordinates found"):
        tissue.coordinates(a)


def test_coordinates_must_be_finite():
    a = _toy(5)
    a.obsm["spatial"] = np.array([[0, 0], [1, 0], [np.nan, 1], [2, 2], [3, 3]], dtype=float)
    with pytest.raises(SigelInputError, match="NaN"):
        tissue.coordinates(a)


def test_images_follow_the_rule_obsm_before_obs_xy():
    """obsm['spatial'] is a 6 x 5 integer grid; obs x/y are unrelated free numbers: the grid wins."""
    base = sigel.datasets.synthetic_tissue(10, shape=(5, 6), geometry="grid", seed=0)
    rng = np.random.default_rng(1)
    a = base.copy()
    a.obs["x"], a.obs["y"] = rng.uniform(0, 1000, a.n_obs), rng.uniform(0, 1000, a.n_obs)
    im = GeneImages.from_anndata(a, min_spots=0)
    ref = GeneImages.from_anndata(base, min_spots=0)
    assert im.settings["geometry"] == "grid" and im.shape == ref.shape
    np.testing.assert_array_equal(im.spot_pixel, ref.spot_pixel)
    # an explicit key that is missing is an error, not a silent fall back to obs x/y
    with pytest.raises(SigelInputError, match="spatial_key 'aligned' not found"):
        GeneImages.from_anndata(a, spatial_key="aligned", min_spots=0)
    # without obsm, obs x/y are used
    b = a.copy()
    del b.obsm["spatial"]
    assert GeneImages.from_anndata(b, min_spots=0).settings["geometry"] == "free"


# ------------------------------------------------- duplicated / crowded coordinates
def test_one_duplicated_grid_position_stays_a_grid_and_warns():
    a = sigel.datasets.synthetic_tissue(10, shape=(16, 24), geometry="grid", seed=0)
    ref = GeneImages.from_anndata(a, min_spots=0)
    b = a.copy()
    b.obsm["spatial"] = b.obsm["spatial"].copy()
    b.obsm["spatial"][1] = b.obsm["spatial"][0]
    b.obs["x"], b.obs["y"] = b.obsm["spatial"][:, 0], b.obsm["spatial"][:, 1]
    with pytest.warns(UserWarning, match=rf"1 of {a.n_obs} spots repeat the grid position"):
        im = GeneImages.from_anndata(b, min_spots=0)
    assert im.settings["geometry"] == "grid" and im.shape == ref.shape


def test_many_duplicated_integer_positions_are_free_with_a_warning():
    a = _toy(200)
    rng = np.random.default_rng(0)
    a.obsm["spatial"] = rng.integers(0, 10, size=(200, 2)).astype(float)   # 100 positions, 200 spots
    with pytest.warns(UserWarning, match=r"spots repeat another spot's position: not a lattice"):
        assert detect_geometry(a) == "free"


def test_free_coordinates_crowding_pixels_warn_with_numbers():
    rng = np.random.default_rng(0)
    a = _toy(2000, 3)
    a.obsm["spatial"] = rng.uniform(0, 1000, size=(2000, 2))
    with pytest.warns(UserWarning, match=r"resolution=16: [\d,]+ of 2,000 spots/cells share a pixel") as rec:
        GeneImages.from_anndata(a, geometry="free", resolution=16, min_spots=0)
    assert "resolution >=" in str(rec[0].message)
    b = _toy(30, 3)
    b.obsm["spatial"] = np.column_stack([np.arange(30) * 10.0, (np.arange(30) % 7) * 10.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GeneImages.from_anndata(b, geometry="free", resolution=64, min_spots=0)


# ----------------------------------------------------------------- counts
def test_counts_and_library_size_checks():
    a = _toy(8)
    X = tissue.counts(a)
    assert sp.isspmatrix_csr(X) and X.shape == (8, 6)
    np.testing.assert_allclose(tissue.library_size(a), a.X.sum(1))
    a.obs["lib"] = 100.0
    np.testing.assert_allclose(tissue.library_size(a, library_size_key="lib"), 100.0)
    with pytest.raises(SigelInputError, match="library_size_key 'nope'"):
        tissue.library_size(a, library_size_key="nope")
    with pytest.raises(SigelInputError, match="layer 'raw' not found"):
        tissue.counts(a, "raw")
    L = tissue.log_normalize(a, ["g2", "g0"])
    lib = a.X.sum(1)
    ref = np.log1p(a.X[:, [2, 0]] * (np.median(lib) / lib)[:, None])
    np.testing.assert_allclose(L.toarray(), ref, rtol=1e-6)


# ------------------------------------------------------------------ graph
def test_spatial_neighbors_is_the_knn_graph_and_stored_only_when_asked():
    rng = np.random.default_rng(0)
    a = _toy(50)
    a.obsm["spatial"] = rng.uniform(size=(50, 2))
    before = _digest(a)
    conn, dist = tissue.spatial_neighbors(a, 5)
    assert _digest(a) == before and len(a.obsp.keys()) == 0     # nothing written by default
    D = np.linalg.norm(a.obsm["spatial"][:, None] - a.obsm["spatial"][None], axis=-1)
    np.fill_diagonal(D, np.inf)
    ref = np.argsort(D, axis=1)[:, :5]
    C = conn.toarray()
    assert (C.sum(1) == 5).all() and np.all(np.diag(C) == 0)
    for i in range(50):
        assert set(np.flatnonzero(C[i])) == set(ref[i])
        np.testing.assert_allclose(np.sort(dist[i].data), np.sort(D[i, ref[i]]))
    tissue.spatial_neighbors(a, 5, key_added="spatial")
    assert {"spatial_connectivities", "spatial_distances"} <= set(a.obsp.keys())
    assert a.uns["spatial_neighbors"]["params"]["n_neighbors"] == 5


def test_duplicated_coordinates_never_make_a_spot_its_own_neighbour():
    xy = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [5, 5]], dtype=float)
    idx, dist = tissue.knn_indices(xy, 2)
    assert not (idx == np.arange(5)[:, None]).any()
    assert set(idx[0]) == {1, 2} and np.all(dist[:3, 0] == 0)


def test_a_stored_graph_is_reused_by_morans_i():
    a = sigel.datasets.synthetic_tissue(12, shape=(8, 8), seed=0)
    tissue.spatial_neighbors(a, 6, key_added="spatial")
    # replace the stored graph by a different one: a task that reuses it must give its Moran's I
    n = a.n_obs
    ring = sp.csr_matrix((np.ones(n), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    a.obsp["spatial_connectivities"] = ring
    got = tissue.morans_i(a)["I"].to_numpy()
    Z = tissue.log_normalize(a).toarray().astype(np.float64)
    Z -= Z.mean(0)
    W = ring.toarray()
    ref = n / W.sum() * np.einsum("ig,ij,jg->g", Z, W, Z) / (Z ** 2).sum(0)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # another k: not reused
    other = tissue.morans_i(a, n_neighbors=4)["I"].to_numpy()
    assert not np.allclose(other, got)


# ------------------------------------------------------------- Moran's I
def _brute_moran(x, W):
    """Moran's I and its randomisation z-score from the textbook formulas (dense)."""
    n = len(x)
    z = x - x.mean()
    S0 = W.sum()
    S1 = 0.5 * ((W + W.T) ** 2).sum()
    S2 = ((W.sum(1) + W.sum(0)) ** 2).sum()
    I = n / S0 * (z @ W @ z) / (z @ z)
    b2 = n * (z ** 4).sum() / (z @ z) ** 2
    E = -1 / (n - 1)
    EI2 = (n * ((n * n - 3 * n + 3) * S1 - n * S2 + 3 * S0 ** 2)
           - b2 * ((n * n - n) * S1 - 2 * n * S2 + 6 * S0 ** 2)) / ((n - 1) * (n - 2) * (n - 3) * S0 ** 2)
    return I, (I - E) / math.sqrt(EI2 - E * E)


def test_morans_i_matches_brute_force_and_is_the_one_statistic():
    a = sigel.datasets.synthetic_tissue(15, shape=(9, 9), geometry="visium", seed=2)
    tab = tissue.morans_i(a)
    assert list(tab.columns) == ["I", "z", "pval", "qval"] and tab.index.name == "gene"
    coords = tissue.coordinates(a)
    D = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(D, np.inf)
    W = np.zeros_like(D)
    nn = np.argsort(D, axis=1, kind="stable")[:, :6]
    W[np.repeat(np.arange(len(D)), 6), nn.ravel()] = 1 / 6
    X = tissue.log_normalize(a).toarray().astype(np.float64)
    for j, g in enumerate(a.var_names):
        I, z = _brute_moran(X[:, j], W)
        assert tab.loc[g, "I"] == pytest.approx(I, rel=1e-5, abs=1e-7)
        assert tab.loc[g, "z"] == pytest.approx(z, rel=1e-5, abs=1e-6)
    from scipy.stats import norm

    np.testing.assert_allclose(tab["pval"], norm.sf(tab["z"]), rtol=1e-10)
    # tl.morans_i and the pruning score table are this statistic, under their own column names
    tl_tab = sigel.tl.morans_i(a).reindex(tab.index)
    np.testing.assert_allclose(tl_tab["I"], tab["I"])
    np.testing.assert_allclose(tl_tab["pval"], tab["pval"])
    from sigel.tasks.domains import morans_i_table

    pr = morans_i_table(a).reindex(tab.index)
    np.testing.assert_allclose(pr["score"], tab["I"])
    np.testing.assert_allclose(pr["zscore"], tab["z"])


def test_morans_i_constant_gene_is_nan_not_a_warning():
    a = _toy(30)
    a.obsm["spatial"] = np.random.default_rng(0).uniform(size=(30, 2))
    a.X[:, 0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tab = tissue.morans_i(a)
    assert np.isnan(tab.loc["g0", "I"]) and np.isfinite(tab.loc["g1", "I"])


@pytest.mark.parametrize("fn", ["tissue", "tl"])
def test_morans_i_validates_like_fit(fn):
    f = tissue.morans_i if fn == "tissue" else sigel.tl.morans_i
    a = _toy(30)
    a.obsm["spatial"] = np.random.default_rng(0).uniform(size=(30, 2))
    bad = a.copy()
    bad.X[3, 1] = np.nan
    before = _digest(bad)
    with pytest.raises(SigelInputError, match="NaN"):
        f(bad)
    assert _digest(bad) == before
    neg = a.copy()
    neg.X[0, 0] = -1
    with pytest.raises(SigelInputError, match="negative"):
        f(neg)
    with pytest.raises(SigelInputError, match="at least 4 spots; got 1"):
        f(a[:1].copy())
    with pytest.raises(SigelInputError, match="genes not in adata.var_names"):
        f(a, genes=["g0", "nope"])
    before = _digest(a)
    f(a)
    assert _digest(a) == before


# ------------------------------------------------------- SpaGCN's sparse adjacency
def test_sparse_spagcn_length_scale_and_kernel_match_the_dense_ones():
    from sigel.tasks import domains as D

    spg = D._import_spagcn()
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 30, size=(400, 2))
    dense = np.linalg.norm(coords[:, None] - coords[None], axis=-1).astype(np.float32)
    for p in (0.5, 1.0):
        with D._quiet():
            l_ref = spg.search_l(p, dense, start=0.01, end=1000, tol=0.01, max_run=100)
        graph = D._KernelGraph(coords, k0=8)
        l = D._search_l(graph, p, start=0.01, end=1000, tol=0.01, max_run=100)
        assert l == pytest.approx(l_ref, rel=1e-9)
        while graph.max_tail(l) > D._KERNEL_TAIL and graph.grow():
            pass
        A = graph.adjacency(l).toarray()
        ref = np.exp(-(dense.astype(np.float64) ** 2) / (2 * l * l))
        assert graph.k < 399                       # sparse: not every pair is kept
        # what is left out is below the stated bound (plus float32 rounding of the kept weights)
        assert np.abs(A - ref).sum(1).max() < D._KERNEL_TAIL + 1e-6


def test_sparse_spagcn_histology_distances_match_spagcn():
    from sigel.tasks import domains as D

    spg = D._import_spagcn()
    rng = np.random.default_rng(1)
    coords = rng.uniform(5, 95, size=(150, 2))
    img = rng.uniform(0, 255, size=(100, 100, 3))
    px = np.round(coords).astype(np.int64)
    with D._quiet():
        dense = spg.calculate_adj_matrix(x=coords[:, 0].tolist(), y=coords[:, 1].tolist(),
                                         x_pixel=px[:, 1].tolist(), y_pixel=px[:, 0].tolist(), image=img,
                                         histology=True)
    xyz = D._spagcn_coordinates(spg, coords, img)
    assert xyz.shape == (150, 3)
    ours = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    np.testing.assert_allclose(ours, dense, rtol=1e-4, atol=1e-3)
    with pytest.raises(SigelInputError, match="H x W x 3"):
        D._spagcn_coordinates(spg, coords, img[:, :, 0])
