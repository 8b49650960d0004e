import numpy as np
import pandas as pd

import sigel


def test_mouse_olfactory_bulb():
    a = sigel.datasets.mouse_olfactory_bulb()
    assert a.shape[0] == 262 and a.shape[1] > 10000
    assert a.obs["layer"].nunique() == 5
    assert "Ståhl" in a.uns["citation"]
    # every gene detected in >= 10 spots, integer counts
    assert ((a.X > 0).sum(0).A1 >= 10).all()
    assert np.allclose(a.X.data, np.round(a.X.data))
    im = sigel.GeneImages.from_anndata(a)
    assert im.settings["geometry"] == "grid"


def test_synthetic_tissue_deterministic_and_planted():
    a = sigel.datasets.synthetic_tissue(60, n_families=4, seed=5)
    b = sigel.datasets.synthetic_tissue(60, n_families=4, seed=5)
    assert (a.X != b.X).nnz == 0
    c = sigel.datasets.synthetic_tissue(60, n_families=4, seed=6)
    assert (a.X != c.X).nnz > 0
    fam = a.var["family"].astype(str)
    assert set(fam) == set(sigel.datasets.FAMILIES[:4]) | {"none"}
    assert (fam == "none").sum() == 12
    # genes of a family share the planted pattern: correlation within family >> across
    X = np.log1p(a.X.toarray())
    C = np.corrcoef(X.T)
    same = fam.values[:, None] == fam.values[None, :]
    patterned = (fam != "none").values
    mask = np.outer(patterned, patterned) & ~np.eye(len(fam), dtype=bool)
    assert C[mask & same].mean() > C[mask & ~same].mean() + 0.2


def test_synthetic_geometries_and_switch():
    for geom in ("grid", "visium", "free"):
        a = sigel.datasets.synthetic_tissue(30, geometry=geom, shape=(12, 12), seed=1)
        assert a.obsm["spatial"].shape == (a.n_obs, 2)
        im = sigel.GeneImages.from_anndata(a)
        assert im.settings["geometry"] == geom
    a = sigel.datasets.synthetic_tissue(100, switch_fraction=0.2, seed=1)
    b = sigel.datasets.synthetic_tissue(100, switch_fraction=0.0, seed=1)
    sw = a.var["switched"].values
    assert sw.sum() == 16
    assert (a.var["family"].astype(str)[sw] != b.var["family"].astype(str)[sw]).all()
    assert (a.var["family"].astype(str)[~sw] == b.var["family"].astype(str)[~sw]).all()
    pd.testing.assert_index_equal(a.var_names, b.var_names)
