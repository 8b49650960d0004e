"""Acceptance tests of the context / semantics tasks on a real (tiny) SIGEL fit
of the synthetic tissue with planted pattern families. One model per module."""
import numpy as np
import pandas as pd
import pytest

import sigel
from sigel import SigelInputError

FAMILIES_USED = 5


@pytest.fixture(scope="module")
def fitted():
    import torch

    torch.set_num_threads(1)
    # small tissue, default network and schedule (shorter schedules stop before the families separate)
    adata = sigel.datasets.synthetic_tissue(100, n_families=FAMILIES_USED, shape=(16, 16), seed=0)
    model = sigel.SIGEL(n_contexts=6).fit(adata, seed=0, progress=False, n_threads=1)
    fam = adata.var["family"].astype(str)
    return adata, model, fam


def _family_genes(fam):
    return fam[fam != "none"]


# ------------------------------------------------------------------ neighbours
def test_neighbors_of_family_genes_are_mostly_family(fitted):
    adata, model, fam = fitted
    fg = _family_genes(fam)
    tab = sigel.tl.neighbors(model, list(fg.index), k=10)
    same = fam[tab["query"]].to_numpy() == fam[tab["neighbor"]].to_numpy()
    per_gene = pd.Series(same).groupby(tab["query"].to_numpy()).mean()
    assert per_gene.mean() >= 0.8, per_gene.groupby(fam[per_gene.index].to_numpy()).mean()
    assert (per_gene >= 0.5).mean() >= 0.9


# ------------------------------------------------------------------ enrichment
def test_enrichment_finds_planted_families(fitted, tmp_path):
    adata, model, fam = fitted
    rng = np.random.default_rng(1)
    gmt = tmp_path / "families.gmt"
    lines = [f"FAMILY_{f.upper()}\tplanted\t" + "\t".join(fam.index[fam == f]) for f in _family_genes(fam).unique()]
    # controls: 20 random gene sets of a family's size
    for r in range(20):
        lines.append(f"RANDOM_{r}\tcontrol\t" + "\t".join(rng.choice(fam.index, 16, replace=False)))
    gmt.write_text("\n".join(lines) + "\n")
    tab = sigel.tl.enrichment(model, str(gmt))
    best = tab.groupby("set")["q"].min()
    for f in _family_genes(fam).unique():
        assert best[f"FAMILY_{f.upper()}"] < 0.05, best
    # random sets: BH over all tests of the grouping keeps false positives rare
    q_all = sigel.tl.enrichment(model, str(gmt), fdr_scope="all").groupby("set")["q"].min()
    rand = q_all[q_all.index.str.startswith("RANDOM_")].reindex([f"RANDOM_{r}" for r in range(20)]).fillna(1.0)
    assert (rand < 0.05).mean() <= 0.1, rand.sort_values().head()
    # contexts made (mostly) of pattern-free genes have no significant family set
    ctx = model.contexts_["context"].map(lambda k: f"context_{k}")
    free_frac = (fam[ctx.index] == "none").groupby(ctx).mean()
    free_ctx = free_frac.index[free_frac > 0.5]
    sig = tab[(tab["q"] < 0.05) & tab["context"].isin(free_ctx) & tab["set"].str.startswith("FAMILY_")]
    assert sig.empty, sig
    # several resolutions: every family is found at k = 5 and 10
    res = sigel.tl.enrichment(model, str(gmt), resolutions=[5, 10], seed=0)
    for r, sub in res.groupby("resolution"):
        fams = sub.loc[sub["q"] < 0.05, "set"]
        assert fams.str.startswith("FAMILY_").sum() >= FAMILIES_USED, r
    summ = sigel.tl.enrichment_summary(res)
    assert set(summ.index) == {"k5", "k10"} and (summ["frac_enriched"] >= 0.5).all(), summ


# ------------------------------------------------------------------ interactions
def test_interaction_auroc_family_pairs_vs_random(fitted):
    adata, model, fam = fitted
    fg = _family_genes(fam)
    rng = np.random.default_rng(0)
    i, j = np.triu_indices(len(fg), 1)                     # distinct pairs, no duplicates across folds
    lab = (fg.to_numpy()[i] == fg.to_numpy()[j]).astype(int)
    pos = rng.choice(np.flatnonzero(lab == 1), 250, replace=False)
    neg = rng.choice(np.flatnonzero(lab == 0), 250, replace=False)
    sel = np.concatenate([pos, neg])
    pairs = pd.DataFrame({"a": fg.index[i[sel]], "b": fg.index[j[sel]], "label": lab[sel]})
    tab = sigel.tl.interactions(model, pairs, classifiers="logistic", seed=0)
    s = tab.set_index("embedding")["auroc"]
    assert s["sigel"] >= 0.9, tab
    assert abs(s["random"] - 0.5) < 0.1, tab
    pred = sigel.tl.fit_interactions(model, pairs)
    M = pred.strength(list(fg.index[:4]) + list(fg.index[-4:]))
    assert M.shape == (8, 8)


# ------------------------------------------------------------------ context maps
def test_context_maps_and_scores(fitted):
    adata, model, fam = fitted
    im = model.images_
    maps = sigel.tl.context_maps(model)
    assert list(maps) == [c for c in model.memberships_.columns if c in maps]
    for m in maps.values():
        assert m.shape == (im.height, im.width)
        assert np.isnan(m[~im.mask]).all() and np.isfinite(m[im.mask]).all()
        assert np.nanmin(m) >= 0 and np.nanmax(m) <= 1
    a = adata.copy()
    sc = sigel.tl.context_scores(model, a)
    assert sc.shape == (adata.n_obs, model.memberships_.shape[1])
    assert np.isfinite(sc.to_numpy()).all()
    assert "sigel_context_scores" in a.obsm and "sigel_context_scores" not in adata.obsm
    # spot scores are the maps read at the spots' pixels (one spot per pixel on this grid)
    for c in maps:
        np.testing.assert_allclose(sc[c].to_numpy(), maps[c].ravel()[im.spot_pixel], rtol=1e-5, atol=1e-6)
    # the context holding most of a family's genes paints that family's planted pattern
    pats = sigel.datasets.family_patterns(adata.obs["u"], adata.obs["v"], FAMILIES_USED)
    ctx = model.contexts_["context"].map(lambda k: f"context_{k}")
    for f, pat in pats.items():
        major = ctx[fam[fam == f].index].value_counts().index[0]
        r = np.corrcoef(sc[major].to_numpy(), pat)[0, 1]
        assert r > 0.6, (f, major, r)
    # a subset, an AnnData route and errors
    sub = sigel.tl.context_maps(model, adata, contexts=[0, "context_1"], min_genes=0)
    assert list(sub) == ["context_0", "context_1"]
    with pytest.raises(SigelInputError, match="not found"):
        sigel.tl.context_maps(model, contexts=["context_99"])


def test_context_maps_after_load_need_images(fitted, tmp_path):
    adata, model, fam = fitted
    model.save(tmp_path / "m")
    loaded = sigel.SIGEL.load(tmp_path / "m")
    with pytest.raises(SigelInputError, match="images"):
        sigel.tl.context_maps(loaded)
    a = sigel.tl.context_maps(loaded, adata)
    b = sigel.tl.context_maps(model)
    for k in b:
        np.testing.assert_allclose(a[k], b[k], equal_nan=True, rtol=1e-5, atol=1e-6)
    # the AnnData route stores the embedding-based tasks' inputs too
    ad2 = adata.copy()
    model.write_to(ad2)
    t1 = sigel.tl.neighbors(ad2, "gene00000", k=5)
    t2 = sigel.tl.neighbors(model, "gene00000", k=5)
    pd.testing.assert_frame_equal(t1, t2, atol=1e-5)
    e1 = sigel.tl.enrichment(ad2, {"s": list(fam.index[fam == "gradient"])})
    e2 = sigel.tl.enrichment(model, {"s": list(fam.index[fam == "gradient"])})
    pd.testing.assert_frame_equal(e1, e2)


def test_plot_context_maps(fitted, tmp_path):
    import matplotlib.pyplot as plt

    adata, model, fam = fitted
    fig = sigel.pl.context_maps(model, ncols=3)
    fig.savefig(tmp_path / "ctx.png")
    assert sum(1 for a in fig.axes if a.images) == len(sigel.tl.context_maps(model))
    plt.close("all")


def test_spot_embeddings_are_centred_projections_keyed_by_name():
    import scipy.sparse as sp

    ad = sigel.datasets.synthetic_tissue(30, seed=2)
    rng = np.random.default_rng(0)
    E = pd.DataFrame(rng.normal(size=(30, 5)), index=ad.var_names)
    before = ad.copy()
    S = sigel.tl.spot_embeddings(E.iloc[::-1], ad, key_added=None)   # row order of E does not matter
    assert "sigel_spots" not in ad.obsm and np.array_equal(ad.X.toarray(), before.X.toarray())
    X = ad.X.toarray().astype(np.float64)
    lib = X.sum(1)
    L = np.log1p(X * (np.median(lib[lib > 0]) / lib)[:, None])
    want = (L - L.mean(0)) @ E.to_numpy() / 30
    np.testing.assert_allclose(S.to_numpy(), want, rtol=1e-4, atol=1e-6)
    assert list(S.index) == list(ad.obs_names) and list(S.columns) == [f"SIGEL_{i}" for i in range(1, 6)]
    sigel.tl.spot_embeddings(E, ad)
    assert ad.obsm["sigel_spots"].shape == (ad.n_obs, 5)
    with pytest.raises(sigel.SigelInputError, match="overlap"):
        sigel.tl.spot_embeddings(E.rename(index=lambda g: g + "_x"), ad)
