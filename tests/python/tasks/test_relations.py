"""Cores of the gene-relation tasks on hand-made embeddings (no model needed):
neighbours, GMT reading, hypergeometric enrichment, gene identifiers,
interaction prediction and the plots."""
import gzip

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom

import sigel
from sigel import SigelInputError
from sigel.tasks.enrichment import _bh


def _clustered(n_per=20, n_fam=3, dim=6, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    fam = np.repeat(np.arange(n_fam), n_per)
    X = rng.normal(size=(n_fam, dim))[fam] + noise * rng.normal(size=(n_fam * n_per, dim))
    emb = pd.DataFrame(X, index=[f"g{i}" for i in range(len(fam))])
    return emb, pd.Series(fam, index=emb.index)


# ---------------------------------------------------------------- neighbours
def test_neighbors_matches_brute_force_and_batches():
    emb, _ = _clustered()
    tab = sigel.tl.neighbors(emb, ["g0", "g25"], k=5, batch_size=1)
    assert list(tab.columns) == ["query", "neighbor", "cosine", "rank"]
    assert tab.shape == (10, 4)
    raw = sigel.tl.neighbors(emb, ["g0", "g25"], k=5, center=False)
    for frame, center in ((tab, True), (raw, False)):
        E = emb.to_numpy() - (emb.to_numpy().mean(0) if center else 0.0)  # default: centred cosines
        X = E / np.linalg.norm(E, axis=1, keepdims=True)
        for q in ["g0", "g25"]:
            s = pd.Series(X @ X[emb.index.get_loc(q)], index=emb.index).drop(q).sort_values(ascending=False)
            got = frame[frame["query"] == q]
            assert got["neighbor"].tolist() == s.index[:5].tolist()
            np.testing.assert_allclose(got["cosine"].to_numpy(), s.to_numpy()[:5], atol=1e-12)
            assert got["rank"].tolist() == [1, 2, 3, 4, 5]
    # all genes, batched == one batch
    a = sigel.tl.neighbors(emb, k=3, batch_size=7)
    b = sigel.tl.neighbors(emb, k=3, batch_size=1000)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3 * len(emb) and not (a["query"] == a["neighbor"]).any()


def test_neighbors_single_gene_self_and_errors():
    emb, _ = _clustered()
    t = sigel.tl.neighbors(emb, "g3", k=2, include_self=True)
    assert t["neighbor"].iloc[0] == "g3" and t["cosine"].iloc[0] == pytest.approx(1.0)
    t = sigel.tl.neighbors(emb, ["g1", "nope"], k=2)
    assert t.attrs["n_unmapped"] == 1 and set(t["query"]) == {"g1"}
    with pytest.raises(SigelInputError, match="none of the"):
        sigel.tl.neighbors(emb, ["nope"], k=2)
    with pytest.raises(SigelInputError, match="k"):
        sigel.tl.neighbors(emb, "g1", k=0)
    with pytest.raises(SigelInputError, match="model"):
        sigel.tl.neighbors(np.zeros((3, 2)), "g1")
    # k larger than the number of other genes is capped
    assert len(sigel.tl.neighbors(emb.iloc[:4], "g0", k=50)) == 3


def test_neighbors_symbols_and_ensembl_ids():
    emb, _ = _clustered()
    ens = [f"ENSG{i:011d}" for i in range(len(emb))]
    emb_e = emb.set_axis(ens)
    sym = {e: f"SYM{i}" for i, e in enumerate(ens) if i != 5}   # gene 5 has no symbol
    by_id = sigel.tl.neighbors(emb_e, ens[0], k=4, gene_symbols=sym)
    by_sym = sigel.tl.neighbors(emb_e, "SYM0", k=4, gene_symbols=sym)
    pd.testing.assert_frame_equal(by_id, by_sym)
    assert by_sym["query_symbol"].iloc[0] == "SYM0"
    # lower-case symbols resolve too; unknown ones are counted
    t = sigel.tl.neighbors(emb_e, ["sym1", "SYM5", "SYM999"], k=2, gene_symbols=sym)
    assert t.attrs["n_unmapped"] == 2 and set(t["query"]) == {ens[1]}
    # a var column of an AnnData works the same
    import anndata as ad

    a = ad.AnnData(np.zeros((2, len(ens)), dtype=np.float32), var=pd.DataFrame(
        {"gene_symbol": [sym.get(e) for e in ens]}, index=ens))
    t2 = sigel.tl.neighbors(emb_e, "SYM0", k=4, gene_symbols="gene_symbol", adata=a)
    pd.testing.assert_frame_equal(t2, by_sym)
    with pytest.raises(SigelInputError, match="gene_symbols"):
        sigel.tl.neighbors(emb_e, "SYM0", gene_symbols="gene_symbol")     # no adata
    with pytest.raises(SigelInputError, match="not found in adata.var"):
        sigel.tl.neighbors(emb_e, "SYM0", gene_symbols="nope", adata=a)


# ---------------------------------------------------------------- GMT + enrichment
def test_read_gmt_plain_gz_and_many(tmp_path):
    p1 = tmp_path / "a.gmt"
    p1.write_text("S1\tdesc\tg1\tg2\tg2\tg3\t\nS2\thttp://x\tg4\n\n")
    p2 = tmp_path / "b.gmt.gz"
    with gzip.open(p2, "wt") as fh:
        fh.write("S3\tna\tg5\tg6\nS1\tdup\tg9\n")
    sets = sigel.tl.read_gmt([p1, p2])
    assert sets == {"S1": ["g1", "g2", "g3"], "S2": ["g4"], "S3": ["g5", "g6"]}
    assert sigel.tl.read_gmt(p1, min_size=2) == {"S1": ["g1", "g2", "g3"]}
    with pytest.raises(SigelInputError, match="not found"):
        sigel.tl.read_gmt(tmp_path / "missing.gmt")
    bad = tmp_path / "bad.gmt"
    bad.write_text("justonefield\n")
    with pytest.raises(SigelInputError, match="GMT"):
        sigel.tl.read_gmt(bad)


def test_bh_matches_reference():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.5])
    # R: p.adjust(c(.01,.04,.03,.2,.5), "BH") = 0.05 0.0666667 0.0666667 0.25 0.5
    np.testing.assert_allclose(_bh(p), [0.05, 0.2 / 3, 0.2 / 3, 0.25, 0.5])


def test_enrichment_hypergeometric_closed_form():
    emb, fam = _clustered(n_per=20, n_fam=3)
    groups = fam.map(lambda f: f"grp{f}")
    sets = {"fam0": list(emb.index[:20]), "mixed": list(emb.index[15:30]) + ["not_a_gene"], "tiny": ["g1", "g2"]}
    tab = sigel.tl.enrichment(emb, sets, groups, min_size=3)
    assert {"resolution", "context", "set", "overlap", "set_size", "group_size", "p", "q", "genes"} <= set(tab.columns)
    assert "tiny" not in set(tab["set"])                        # below min_size
    r = tab[(tab["context"] == "grp0") & (tab["set"] == "mixed")].iloc[0]
    # overlap of g15..g19 with group 0: 5 of a 15-gene set, 20-gene group, 60 genes
    assert (r["overlap"], r["set_size"], r["group_size"]) == (5, 15, 20)
    assert r["p"] == pytest.approx(hypergeom.sf(4, 60, 15, 20))
    assert r["genes"] == "g15,g16,g17,g18,g19"
    top = tab[(tab["context"] == "grp0") & (tab["set"] == "fam0")].iloc[0]
    assert top["q"] < 1e-10 and top["fold"] == pytest.approx(3.0)
    assert tab.attrs["universe_size"] == 60 and tab.attrs["n_set_genes_unmapped"] == 1
    # fdr_scope='all' is never smaller than per group
    tab_all = sigel.tl.enrichment(emb, sets, groups, min_size=3, fdr_scope="all")
    m = tab.merge(tab_all, on=["context", "set"], suffixes=("", "_all"))
    assert (m["q_all"] >= m["q"] - 1e-12).all()


def test_enrichment_group_formats_and_resolutions():
    emb, fam = _clustered(n_per=20, n_fam=3)
    sets = {f"fam{k}": list(emb.index[fam == k]) for k in range(3)}
    as_series = sigel.tl.enrichment(emb, sets, fam)
    as_lists = sigel.tl.enrichment(emb, sets, {k: list(emb.index[fam == k]) for k in range(3)})
    cols = ["context", "set", "overlap", "p"]
    pd.testing.assert_frame_equal(as_series[cols], as_lists[cols])
    res = sigel.tl.enrichment(emb, sets, resolutions=[3, 6], seed=1)
    assert set(res["resolution"]) == {"k3", "k6"}
    summ = sigel.tl.enrichment_summary(res)
    assert summ.loc["k3", "frac_enriched"] == 1.0            # 3 clean clusters, 3 sets
    assert summ.loc["k6", "n_groups"] == 6
    res2 = sigel.tl.enrichment(emb, sets, resolutions=[3, 6], seed=1)
    pd.testing.assert_frame_equal(res, res2)                  # seeded
    mix = sigel.tl.enrichment(emb, sets, resolutions=[3], cluster_method="mixture")
    assert (mix.groupby("set")["q"].min() < 1e-6).all()
    cl = sigel.tl.gene_clusters(emb, 3)
    assert list(cl.columns) == ["k3"] and cl.index.equals(emb.index)
    with pytest.raises(SigelInputError, match="either"):
        sigel.tl.enrichment(emb, sets, fam, resolutions=[2])
    with pytest.raises(SigelInputError, match="no gene set"):
        sigel.tl.enrichment(emb, {"x": ["a", "b", "c", "d", "e"]}, fam)


def test_enrichment_symbols_for_ensembl_universe(tmp_path):
    emb, fam = _clustered(n_per=20, n_fam=3)
    ens = [f"ENSG{i:011d}" for i in range(len(emb))]
    emb_e = emb.set_axis(ens)
    sym = {e: f"SYM{i}" for i, e in enumerate(ens) if i % 10 != 9}      # 6 genes unmapped
    p = tmp_path / "sets.gmt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("FAM0\t-\t" + "\t".join(f"SYM{i}" for i in range(20)) + "\tUNKNOWN1\n")
        fh.write("BYID\t-\t" + "\t".join(ens[20:30]) + "\n")
    tab = sigel.tl.enrichment(emb_e, str(p), pd.Series(fam.to_numpy(), index=ens), gene_symbols=sym)
    r = tab[(tab["set"] == "FAM0") & (tab["context"] == "0")].iloc[0]
    assert r["overlap"] == 18 and r["q"] < 1e-6                       # SYM9, SYM19 missing
    assert r["genes"].startswith("SYM0,SYM1,")
    assert tab.attrs["n_genes_without_symbol"] == 6
    assert tab.attrs["n_set_genes_unmapped"] == 3                     # UNKNOWN1, SYM9, SYM19
    assert (tab["set"] == "BYID").any()                               # ids still match directly


# ---------------------------------------------------------------- interactions
def _family_pairs(emb, fam, n=400, seed=0):
    i, j = np.triu_indices(len(emb), 1)
    pairs = pd.DataFrame({"a": emb.index[i], "b": emb.index[j], "label": (fam.to_numpy()[i] == fam.to_numpy()[j])})
    return pairs.sample(n, random_state=seed).assign(label=lambda d: d["label"].astype(int))


def test_pair_features_symmetric():
    from sigel.tasks.interactions import FEATURES, pair_features

    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    for f in FEATURES:
        np.testing.assert_allclose(pair_features(U, V, f), pair_features(V, U, f))


def test_interactions_beats_random_and_is_seeded():
    emb, fam = _clustered(n_per=20, n_fam=3, noise=0.5)
    pairs = _family_pairs(emb, fam)
    test = _family_pairs(emb, fam, n=200, seed=1)
    tab = sigel.tl.interactions(emb, pairs, classifiers=["logistic", "mlp"], n_splits=3, test_pairs=test, seed=0)
    assert set(tab["split"]) == {"cv", "test"} and set(tab["embedding"]) == {"sigel", "random"}
    s = tab.set_index(["embedding", "classifier", "split"])
    assert s.loc[("sigel", "logistic", "cv"), "auroc"] > 0.9
    assert s.loc[("sigel", "mlp", "test"), "auroc"] > 0.9
    assert abs(s.loc[("random", "logistic", "cv"), "auroc"] - 0.5) < 0.15
    assert tab.attrs["n_pairs_used"] == 400
    # seeded: the MLP on held-out pairs again (no CV) gives the same rows
    tab2 = sigel.tl.interactions(emb, pairs, classifiers="mlp", n_splits=0, test_pairs=test, seed=0)
    pd.testing.assert_frame_equal(tab2.reset_index(drop=True),
                                  tab[tab["classifier"].eq("mlp") & tab["split"].eq("test")].reset_index(drop=True))


def test_interactions_inputs_and_predictor():
    emb, fam = _clustered(n_per=20, n_fam=3)
    pairs = _family_pairs(emb, fam, n=200)
    extra = pd.DataFrame({"a": ["g0", "zz", "g1"], "b": ["g0", "g1", "yy"], "label": [1, 0, 1]})
    tab = sigel.tl.interactions(emb, pd.concat([pairs, extra]), classifiers="logistic", control=False)
    assert tab.attrs["n_pairs_used"] == 200 and tab.attrs["n_genes_unmapped"] == 2   # self pair + 2 unknown
    as_tuples = sigel.tl.interactions(emb, list(zip(pairs["a"], pairs["b"])), pairs["label"].to_numpy(),
                                      classifiers="logistic", control=False)
    pd.testing.assert_frame_equal(tab, as_tuples)
    with pytest.raises(SigelInputError, match="labels"):
        sigel.tl.interactions(emb, pairs[["a", "b"]])
    with pytest.raises(SigelInputError, match="0/1"):
        sigel.tl.interactions(emb, pairs.assign(label=2))
    with pytest.raises(SigelInputError, match="classifiers"):
        sigel.tl.interactions(emb, pairs, classifiers="svm")
    pred = sigel.tl.fit_interactions(emb, pairs)
    out = pred.predict([("g0", "g1"), ("g0", "g45"), ("g0", "nope")])
    assert out["score"].iloc[0] > 0.5 > out["score"].iloc[1] and np.isnan(out["score"].iloc[2])
    M = pred.strength(["g0", "g1", "g45", "nope"])
    assert M.shape == (3, 3) and np.allclose(M, M.T, equal_nan=True) and np.isnan(np.diag(M)).all()
    assert M.loc["g0", "g1"] > M.loc["g0", "g45"]


def test_plots(tmp_path):
    import matplotlib.pyplot as plt

    emb, fam = _clustered()
    pred = sigel.tl.fit_interactions(emb, _family_pairs(emb, fam, n=150))
    fig = sigel.pl.interaction_heatmap(pred, ["g0", "g1", "g2", "g30", "g45"], annotate=True)
    fig.savefig(tmp_path / "hm.png")
    maps = {"context_0": np.random.default_rng(0).random((6, 6)), "context_1": np.full((6, 6), np.nan)}
    fig2 = sigel.pl.context_maps(maps, contexts=[1])
    assert len([a for a in fig2.axes if a.images]) == 1
    plt.close("all")
