"""sigel.io.r: the readers/writers behind R's readSigelH5AD/readSpaceRanger."""
import gzip

import numpy as np
import pandas as pd
import pytest
import scipy.io as sio
import scipy.sparse as sp

from sigel.io import r as io_r
from sigel._validate import SigelInputError


def _outs(tmp_path, header=True):
    rng = np.random.default_rng(0)
    counts = sp.random(7, 5, density=0.5, random_state=1, format="csc", data_rvs=lambda n: rng.integers(1, 9, n))
    d = tmp_path / "outs" / "filtered_feature_bc_matrix"
    d.mkdir(parents=True)
    with gzip.open(d / "matrix.mtx.gz", "wb") as fh:
        sio.mmwrite(fh, counts.astype(np.int64), field="integer")
    feats = pd.DataFrame({"id": [f"ENSG{i}" for i in range(7)], "name": ["A", "B", "C", "D", "E", "A", "F"],
                          "type": "Gene Expression"})
    feats.to_csv(d / "features.tsv.gz", sep="\t", header=False, index=False)
    bcs = [f"BC{i}-1" for i in range(5)]
    pd.Series(bcs).to_csv(d / "barcodes.tsv.gz", header=False, index=False)
    (tmp_path / "outs" / "spatial").mkdir()
    pos = pd.DataFrame({"barcode": bcs[::-1] + ["OFF-1"], "in_tissue": [1] * 5 + [0],
                        "array_row": [0, 0, 1, 1, 2, 9], "array_col": [0, 2, 1, 3, 0, 9],
                        "pxl_row_in_fullres": [10, 10, 20, 20, 30, 90], "pxl_col_in_fullres": [5, 15, 10, 20, 5, 90]})
    name = "tissue_positions.csv" if header else "tissue_positions_list.csv"
    pos.to_csv(tmp_path / "outs" / "spatial" / name, index=False, header=header)
    return tmp_path / "outs", counts, bcs, pos.set_index("barcode")


@pytest.mark.parametrize("header", [True, False])
def test_read_spaceranger_mtx(tmp_path, header):
    outs, counts, bcs, pos = _outs(tmp_path, header)
    ad = io_r.read_spaceranger(outs)
    assert list(ad.obs_names) == bcs
    assert list(ad.var_names) == ["A", "B", "C", "D", "E", "A-1", "F"]
    np.testing.assert_array_equal(ad.X.toarray(), counts.T.toarray())
    np.testing.assert_array_equal(ad.obs["array_row"], pos.loc[bcs, "array_row"])
    np.testing.assert_array_equal(ad.obsm["spatial"][:, 0], pos.loc[bcs, "pxl_col_in_fullres"])


def test_read_spaceranger_errors(tmp_path):
    with pytest.raises(SigelInputError, match="no Space Ranger outs"):
        io_r.read_spaceranger(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SigelInputError, match="filtered_feature_bc_matrix"):
        io_r.read_spaceranger(tmp_path / "empty")
    with pytest.raises(SigelInputError, match="'filtered' or 'raw'"):
        io_r.read_spaceranger(tmp_path / "empty", matrix="all")


def test_h5ad_round_trip_and_csc_parts(tmp_path):
    import anndata as ad

    X = sp.csr_matrix(np.array([[0, 2.0, 0], [1, 0, 3]]))
    a = ad.AnnData(X=X, obs=pd.DataFrame({"label": ["u", "v"]}, index=["s1", "s2"]),
                   var=pd.DataFrame(index=["g1", "g2", "g3"]))
    f = tmp_path / "a.h5ad"
    io_r.write_h5ad(a, f)
    with pytest.raises(SigelInputError, match="already exists"):
        io_r.write_h5ad(a, f)
    b = io_r.read_h5ad(f)
    assert b.obs["label"].dtype == object          # strings stay strings
    parts = io_r.csc_parts(b.X, transpose=True)     # genes x spots
    m = sp.csc_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=parts["shape"])
    np.testing.assert_array_equal(m.toarray(), X.T.toarray())
    dense = io_r.csc_parts(X.toarray())
    assert dense["dense"] and dense["shape"] == [2, 3]
    (tmp_path / "bad.h5ad").write_text("no")
    with pytest.raises(SigelInputError, match="could not read"):
        io_r.read_h5ad(tmp_path / "bad.h5ad")
