import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sigel
from sigel import GeneImages, SigelInputError


def _toy(n_spots=30, n_genes=8, seed=0, geometry="grid"):
    rng = np.random.default_rng(seed)
    X = rng.poisson(3, size=(n_spots, n_genes)).astype(np.float32)
    obs = pd.DataFrame(index=[f"s{i}" for i in range(n_spots)])
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    if geometry == "grid":
        obs_xy = np.array([(i % 6, i // 6) for i in range(n_spots)], dtype=float)
        a.obs["x"], a.obs["y"] = obs_xy[:, 0], obs_xy[:, 1]
    elif geometry == "visium":
        r = np.arange(n_spots) // 6
        c = 2 * (np.arange(n_spots) % 6) + (r % 2)
        a.obs["array_row"], a.obs["array_col"] = r, c
    else:
        a.obsm["spatial"] = rng.uniform(0, 1000, size=(n_spots, 2))
    return a


@pytest.mark.parametrize("geometry", ["grid", "visium", "free"])
def test_geometries_detected_and_padded(geometry):
    a = _toy(geometry=geometry)
    im = GeneImages.from_anndata(a, patch_size=4, min_spots=0, resolution=20)
    assert im.settings["geometry"] == geometry
    assert im.height % 4 == 0 and im.width % 4 == 0
    assert im.values.shape == (8, im.height * im.width)
    # every spot lands on a tissue pixel and all tissue is kept (never cropped)
    assert im.mask.ravel()[im.spot_pixel].all()
    assert im.mask.sum() == len(np.unique(im.spot_pixel))
    if geometry != "free":
        assert im.mask.sum() == a.n_obs  # one pixel per spot on grids
    # background is zero in every gene
    assert im.values[:, ~im.mask.ravel()].nnz == 0


def test_visium_hex_mapping():
    a = _toy(geometry="visium")
    im = GeneImages.from_anndata(a, min_spots=0)
    rows = im.spot_pixel // im.width
    cols = im.spot_pixel % im.width
    np.testing.assert_array_equal(rows, a.obs["array_row"] - a.obs["array_row"].min())
    np.testing.assert_array_equal(cols, a.obs["array_col"] // 2)


def test_geometry_can_be_forced():
    a = _toy(geometry="grid")
    a.obsm["spatial"] = a.obs[["x", "y"]].to_numpy() * 10.0
    del a.obs["x"], a.obs["y"]
    assert GeneImages.from_anndata(a, min_spots=0).settings["geometry"] == "grid"
    im = GeneImages.from_anndata(a, geometry="free", resolution=12, min_spots=0)
    assert im.settings["geometry"] == "free"
    assert max(im.mask.shape) <= 12


def test_free_coordinates_rasterised_mean_of_cells():
    # two cells in one pixel: the pixel holds the mean of their (processed) values
    X = np.array([[2.0], [4.0], [10.0]], dtype=np.float32)
    a = ad.AnnData(X=X, var=pd.DataFrame(index=["g"]), obs=pd.DataFrame(index=["a", "b", "c"]))
    a.obsm["spatial"] = np.array([[0.0, 0.0], [0.01, 0.0], [100.0, 100.0]])
    im = GeneImages.from_anndata(a, geometry="free", resolution=8, normalize=False, log1p=False,
                                 scale=None, min_spots=0)
    assert im.spot_pixel[0] == im.spot_pixel[1] != im.spot_pixel[2]
    dense = im.dense([0])[0].ravel()
    assert dense[im.spot_pixel[0]] == pytest.approx(3.0)
    assert dense[im.spot_pixel[2]] == pytest.approx(10.0)
    assert im.settings["n_spots_sharing_pixel"] == 1


def test_normalisation_choices():
    a = _toy()
    raw = GeneImages.from_anndata(a, normalize=False, log1p=False, scale=None, min_spots=0)
    X = a.X
    np.testing.assert_allclose(raw.spot_values().toarray(), X.T, rtol=1e-6)
    lg = GeneImages.from_anndata(a, normalize=False, log1p=True, scale=None, min_spots=0)
    np.testing.assert_allclose(lg.spot_values().toarray(), np.log1p(X.T), rtol=1e-5)
    nm = GeneImages.from_anndata(a, normalize=True, target_sum=100.0, log1p=False, scale=None, min_spots=0)
    np.testing.assert_allclose(nm.spot_values().toarray().sum(0), 100.0, rtol=1e-4)
    # an external library size (e.g. sum_umi) is used instead of the row sums
    a2 = a.copy()
    a2.obs["sum_umi"] = 2 * X.sum(1)
    ext = GeneImages.from_anndata(a2, library_size_key="sum_umi", target_sum=100.0, log1p=False, scale=None,
                                  min_spots=0)
    np.testing.assert_allclose(ext.spot_values().toarray().sum(0), 50.0, rtol=1e-4)
    sc = GeneImages.from_anndata(a, min_spots=0)
    assert sc.values.max() <= 1.0 + 1e-6 and sc.values.min() >= 0
    # robust scale: intensity removed -> a gene and 10x that gene give the same image
    a3 = ad.AnnData(X=np.column_stack([X[:, 0], 10 * X[:, 0]]), obs=a.obs, var=pd.DataFrame(index=["g", "g10"]))
    s3 = GeneImages.from_anndata(a3, normalize=False, log1p=False, min_spots=0)
    np.testing.assert_allclose(s3.dense([0]), s3.dense([1]), rtol=1e-5)


def test_gene_filters():
    a = _toy(n_genes=6)
    a.var_names = ["mt-Co1", "MT-ND1", "ERCC-0001", "Actb", "Gapdh", "rare"]
    a.X[:, 5] = 0
    a.X[0, 5] = 1
    im = GeneImages.from_anndata(a, min_spots=2)
    assert list(im.genes) == ["Actb", "Gapdh"]
    im = GeneImages.from_anndata(a, min_spots=0, exclude_prefixes=())
    assert len(im.genes) == 6
    im = GeneImages.from_anndata(a, genes=["Gapdh", "Actb"], min_spots=0)
    assert set(im.genes) == {"Actb", "Gapdh"}


def test_dense_roundtrip_and_tensors():
    a = sigel.datasets.synthetic_tissue(20, shape=(12, 12), seed=3)
    im = GeneImages.from_anndata(a)
    idx = [0, 5, 7]
    t = im.to_tensor(idx)
    assert tuple(t.shape) == (3, 2, im.height, im.width)
    back = sp.csr_matrix(t[:, 0].reshape(3, -1).numpy())
    assert (back != im.values[idx]).nnz == 0
    np.testing.assert_array_equal(t[0, 1].numpy().astype(bool), im.mask)
    img = im.image(im.genes[5])
    assert np.isnan(img[~im.mask]).all() and np.isfinite(img[im.mask]).all()
    sub = im.subset([im.genes[7], im.genes[0]])
    assert list(sub.genes) == [im.genes[7], im.genes[0]]
    assert (sub.values[0] != im.values[7]).nnz == 0


def test_caller_adata_not_modified():
    a = sigel.datasets.synthetic_tissue(20, shape=(10, 10), seed=1)
    before = (a.X.copy(), a.obs.copy(), a.var.copy(), set(a.obsm.keys()), set(a.uns.keys()))
    GeneImages.from_anndata(a)
    assert (a.X != before[0]).nnz == 0
    pd.testing.assert_frame_equal(a.obs, before[1])
    pd.testing.assert_frame_equal(a.var, before[2])
    assert set(a.obsm.keys()) == before[3] and set(a.uns.keys()) == before[4]


# ---------------------------------------------------------------- bad input
def test_missing_coordinates():
    a = _toy()
    del a.obs["x"], a.obs["y"]
    with pytest.raises(SigelInputError, match="no spatial coordinates"):
        GeneImages.from_anndata(a)


def test_non_numeric_coordinates():
    a = _toy()
    a.obs["x"] = ["a"] * a.n_obs
    with pytest.raises(SigelInputError, match="finite numbers"):
        GeneImages.from_anndata(a)
    b = _toy(geometry="free")
    b.obsm["spatial"] = np.array([["p", "q"]] * b.n_obs, dtype=object)
    with pytest.raises(SigelInputError, match="numeric"):
        GeneImages.from_anndata(b)


@pytest.mark.parametrize("bad,msg", [(np.nan, "NaN"), (-1.0, "negative"), (np.inf, "NaN or infinite")])
def test_bad_values(bad, msg):
    a = _toy()
    a.X[2, 3] = bad
    with pytest.raises(SigelInputError, match=msg):
        GeneImages.from_anndata(a)
    b = _toy()
    b.X = sp.csr_matrix(a.X)
    with pytest.raises(SigelInputError, match=msg):
        GeneImages.from_anndata(b)


def test_coordinate_shape_mismatch():
    a = _toy(geometry="free")
    with pytest.raises(Exception):
        a.obsm["spatial"] = np.zeros((a.n_obs - 1, 2))  # anndata itself refuses
    # our own check (reached via a coordinates array of the wrong width)
    a.obsm["spatial"] = np.zeros((a.n_obs, 1))
    with pytest.raises(SigelInputError, match=r"shape \(n_spots, 2\)"):
        GeneImages.from_anndata(a, geometry="free")
    from sigel._validate import as_coordinates
    with pytest.raises(SigelInputError, match="has 30 spots"):
        as_coordinates(np.zeros((29, 2)), 30)


def test_duplicated_gene_names():
    a = _toy()
    a.var_names = ["g0", "g1", "g1", "g3", "g4", "g4", "g6", "g7"]
    with pytest.raises(SigelInputError, match=r"duplicated gene names.*'g1'.*'g4'"):
        GeneImages.from_anndata(a)


def test_no_genes_left():
    a = _toy()
    with pytest.raises(SigelInputError, match="no genes left"):
        GeneImages.from_anndata(a, min_spots=1000)


def test_single_spot():
    a = _toy()[:1].copy()
    with pytest.raises(SigelInputError, match="at least 2 spots"):
        GeneImages.from_anndata(a)


def test_unknown_layer_and_key():
    a = _toy()
    with pytest.raises(SigelInputError, match="layer 'counts' not found"):
        GeneImages.from_anndata(a, layer="counts")
    with pytest.raises(SigelInputError, match="library_size_key 'sum_umi' not found"):
        GeneImages.from_anndata(a, library_size_key="sum_umi")


def test_plot_gene_images():
    a = sigel.datasets.synthetic_tissue(10, shape=(10, 10), seed=0)
    im = GeneImages.from_anndata(a)
    fig = sigel.pl.gene_images(im, im.genes[:5], ncols=3)
    assert len([ax for ax in fig.axes if ax.images]) == 5


def test_image_grid_panels_follow_the_tissue_aspect():
    """Wide tissue strips get short panels (no empty bands between rows); square ones square panels."""
    from sigel.pl._grid import image_grid

    titles = ["gene\nscore 1.0, q 0.01"] * 4
    square = image_grid([np.ones((40, 40))] * 4, titles, ncols=2, panel_size=2.0)
    wide = image_grid([np.ones((10, 40))] * 4, titles, ncols=2, panel_size=2.0)
    w_sq, h_sq = square.get_size_inches()
    w_wd, h_wd = wide.get_size_inches()
    assert w_sq == w_wd == 4.0
    assert h_sq > 2 * 2.0  # two rows of square images plus their two-line titles
    assert h_wd < 0.5 * h_sq  # a quarter of the image height, the same title room
