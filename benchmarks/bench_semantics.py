"""Semantics of the gene space on DLPFC 151673: enrichment, interactions, GO similarity.

Three external checks that need no label we trained on, each for three
gene representations of the same genes (dimension D of the SIGEL model):

* ``sigel``   the SIGEL embeddings (model from ``--model``; fitted with the
  default settings and saved there when missing),
* ``pca``     PCA of expression: each gene's log-normalised (``sum_umi``
  library size), per-gene standardised profile over spots, projected on the
  top D principal axes (genes are the observations),
* ``random``  Gaussian vectors (seeded).

Checks
1. Enrichment: the genes are clustered by cosine k-means at three
   resolutions (``--resolutions``, default 10 / 30 / 60 clusters); every
   cluster with >= 5 genes is tested against GO BP sets (propagated, 10-500
   genes; ``reference/gene_sets``) with ``sigel.tl.enrichment``
   (hypergeometric, BH within cluster, universe = embedded genes with a
   symbol); reported: fraction of clusters with a set at FDR < 0.05. The
   SIGEL model's own contexts are one more row.
2. Interactions: GGIPNN gene-gene pairs (Du et al. 2019; ``reference/
   gene_interactions``): logistic regression and an MLP on ``[u*v, |u-v|]``
   fitted on the train pairs whose genes are both embedded, AUROC / AUPRC on
   the covered ``valid`` pairs (``sigel.tl.interactions``, ``n_splits=0``).
3. GO BP semantic similarity: the R function ``sigelGOSimilarity()``
   (GOSemSim, Wang measure, org.Hs.eg.db offline, through rpy2) on all pairs
   of a random sample of annotated genes (``--go-pairs``), Spearman of
   cosine vs GO similarity; the same pairs scored with each representation.
   A simple second measure needs no R: Jaccard index of the genes'
   propagated GO BP set memberships (the GMT above) on ``--jaccard-pairs``
   random pairs.

Prints JSON records and a markdown section.

    .venv/bin/python benchmarks/bench_semantics.py --data ../shared/data [--model DIR]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def log(msg):
    print(f"[bench_semantics] {msg}", file=sys.stderr, flush=True)


class SavedResults:
    """The results stored in a saved model directory (embeddings, memberships, contexts), read without
    rebuilding the network: works for a model saved by an older sigel whose weights no longer load."""

    def __init__(self, path: Path):
        from safetensors.numpy import load_file

        cfg = json.loads((path / "config.json").read_text())
        t = load_file(str(path / "weights.safetensors"))
        genes = pd.Index([str(g) for g in cfg["genes"]])
        E, R = t["results.embeddings"], t["results.memberships"]
        self.embeddings_ = pd.DataFrame(E, index=genes, columns=[f"dim_{i}" for i in range(E.shape[1])])
        self.memberships_ = pd.DataFrame(R, index=genes, columns=[f"context_{k}" for k in range(R.shape[1])])
        self.contexts_ = pd.DataFrame({"context": R.argmax(1), "confidence": R.max(1)}, index=genes)
        self.is_trained = True
        self.config = cfg


def load_or_fit(sigel, adata, path: Path, seed: int, threads: int):
    if (path / "config.json").exists():
        log(f"loading model {path}")
        try:
            return sigel.SIGEL.load(path), 0.0
        except Exception as e:  # saved by another sigel version: its results are still readable
            log(f"the network does not load ({str(e).splitlines()[0][:120]}); reading the saved results only")
            return SavedResults(path), 0.0
    log(f"fitting the default SIGEL model on {adata.n_obs} spots x {adata.n_vars} genes (saved to {path})")
    t = time.perf_counter()
    model = sigel.SIGEL().fit(adata, library_size_key="sum_umi", seed=seed, n_threads=threads)
    secs = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path, overwrite=True)
    return model, secs


def to_data_ids(emb: pd.DataFrame, adata) -> pd.DataFrame:
    """Index the model's embedding by the data's var_names (a model keyed by symbols is mapped through
    var['gene_symbol']); genes not in the data are dropped."""
    ids = pd.Index(adata.var_names.astype(str))
    if emb.index.isin(ids).mean() >= 0.5:
        return emb.loc[emb.index.isin(ids)]
    sym = adata.var["gene_symbol"].astype(object)
    s2i = pd.Series(ids, index=sym.to_numpy())
    s2i = s2i[s2i.index.notna() & ~s2i.index.duplicated()]
    hit = emb.index.isin(s2i.index)
    if hit.mean() < 0.5:
        raise SystemExit(f"the model's genes are neither var_names nor var['gene_symbol'] of this data "
                         f"(e.g. {list(emb.index[:5])})")
    log(f"model genes are symbols: mapped {int(hit.sum())} of {len(emb)} to Ensembl ids")
    out = emb.loc[hit]
    out.index = pd.Index(s2i[out.index].to_numpy())
    return out


def pca_embedding(adata, genes, dim: int, seed: int) -> pd.DataFrame:
    """PCA-of-expression gene vectors: genes x spots standardised log-normalised matrix -> top `dim` PCs."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    X = adata[:, list(genes)].X
    X = sp.csr_matrix(X, dtype=np.float64)
    lib = adata.obs["sum_umi"].to_numpy(np.float64)
    X = sp.diags(np.median(lib) / lib) @ X
    X = X.toarray()
    np.log1p(X, out=X)
    G = X.T                                             # genes x spots
    G = (G - G.mean(1, keepdims=True)) / np.maximum(G.std(1, keepdims=True), 1e-8)
    Z = PCA(n_components=dim, random_state=seed).fit_transform(G)
    return pd.DataFrame(Z, index=pd.Index(genes))


def random_embedding(genes, dim: int, seed: int) -> pd.DataFrame:
    from sigel.tasks.interactions import random_vectors

    return random_vectors(pd.Index(genes), dim, seed)


def read_ggipnn(ref: Path, split: str) -> pd.DataFrame:
    d = ref / "gene_interactions"
    with gzip.open(d / f"GGIPNN_{split}_text.txt.gz", "rt") as fh:
        txt = [ln.split() for ln in fh if ln.strip()]
    with gzip.open(d / f"GGIPNN_{split}_label.txt.gz", "rt") as fh:
        lab = [int(ln.strip()) for ln in fh if ln.strip()]
    if len(txt) != len(lab):
        raise ValueError(f"GGIPNN {split}: {len(txt)} pairs but {len(lab)} labels")
    return pd.DataFrame({"a": [t[0] for t in txt], "b": [t[1] for t in txt], "label": lab})


def unit(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def cos_pairs(emb: pd.DataFrame, a, b) -> np.ndarray:
    U = unit(emb.to_numpy(np.float64))
    ia, ib = emb.index.get_indexer(a), emb.index.get_indexer(b)
    return (U[ia] * U[ib]).sum(1)


# ------------------------------------------------------------------ checks
def check_enrichment(sigel, embs, model_ctx, gmt, symbols, resolutions, seed, min_group):
    rows = []
    for name, emb in embs.items():
        t = time.perf_counter()
        groups = sigel.tl.gene_clusters(emb, resolutions, seed=seed)
        if name == "sigel" and model_ctx is not None:
            groups["model_contexts"] = model_ctx.reindex(groups.index)
        tab = sigel.tl.enrichment(emb, gmt, groups, gene_symbols=symbols, min_size=10, max_size=500)
        secs = time.perf_counter() - t
        for res in groups.columns:
            sizes = groups[res].value_counts()
            big = sizes.index[sizes >= min_group]
            sub = tab[(tab["resolution"] == res) & tab["context"].isin(big)]
            n_enr = sub.loc[sub["q"] < 0.05, "context"].nunique()
            rows.append(dict(check="enrichment", embedding=name, resolution=res, n_groups=int(len(big)),
                             n_enriched=int(n_enr), frac_enriched=float(n_enr / max(len(big), 1)),
                             n_sets_sig=int(sub.loc[sub["q"] < 0.05, "set"].nunique()),
                             universe=int(tab.attrs["universe_size"]), sets_tested=int(tab.attrs["n_sets_tested"]),
                             seconds=round(secs, 2)))
            log(json.dumps(rows[-1]))
    return rows


def check_interactions(sigel, embs, ref, symbols, seed, classifiers):
    train, valid = read_ggipnn(ref, "train"), read_ggipnn(ref, "valid")
    rows = []
    for name, emb in embs.items():
        if name == "random":
            continue                           # the control comes from interactions(control=True)
        t = time.perf_counter()
        tab = sigel.tl.interactions(emb, train, test_pairs=valid, classifiers=classifiers, n_splits=0,
                                    control=(name == "sigel"), gene_symbols=symbols, seed=seed)
        secs = time.perf_counter() - t
        for r in tab.itertuples():
            emb_name = name if r.embedding == "sigel" else "random"
            rows.append(dict(check="ggipnn", embedding=emb_name, classifier=r.classifier, split=r.split,
                             auroc=round(r.auroc, 4), auprc=round(r.auprc, 4), n_valid=int(r.n_pairs),
                             n_valid_pos=int(r.n_positive), n_train_pairs=int(tab.attrs["n_pairs_used"]),
                             n_train_input=int(tab.attrs["n_pairs_input"]), n_valid_input=int(len(valid)),
                             seconds=round(secs, 1)))
            log(json.dumps(rows[-1]))
    return rows


def check_go_gosemsim(embs, id2sym, n_pairs, seed):
    """GOSemSim Wang similarity through the R package (rpy2); cosines of all representations on the same pairs."""
    try:
        import rpy2.robjects as ro
    except Exception as e:  # pragma: no cover - depends on the machine
        log(f"rpy2 unavailable ({e}); skipping the GOSemSim check")
        return [], None
    emb = embs["sigel"]
    sym = id2sym.reindex(emb.index)
    keep = sym.notna() & ~sym.duplicated()
    m = emb.loc[keep.to_numpy()].copy()
    m.index = sym[keep].to_numpy()
    with tempfile.TemporaryDirectory() as td:
        ep, pp = os.path.join(td, "emb.tsv"), os.path.join(td, "pairs.tsv")
        m.to_csv(ep, sep="\t")
        t = time.perf_counter()
        ro.r(f'''
            suppressPackageStartupMessages(library(sigel))
            m <- as.matrix(read.delim("{ep}", row.names = 1, check.names = FALSE))
            res <- sigelGOSimilarity(m, ont = "BP", n_pairs = {int(n_pairs)}L, seed = {int(seed)}L)
            write.table(res$pairs, "{pp}", sep = "\\t", quote = FALSE, row.names = FALSE)
        ''')
        secs = time.perf_counter() - t
        pairs = pd.read_csv(pp, sep="\t", keep_default_na=False)
    sym2id = pd.Series(sym[keep].index.to_numpy(), index=sym[keep].to_numpy())
    a, b = sym2id[pairs["gene1"]].to_numpy(), sym2id[pairs["gene2"]].to_numpy()
    from scipy.stats import spearmanr

    rows = []
    for name, e in embs.items():
        rho = spearmanr(cos_pairs(e, a, b), pairs["go_sim"]).correlation
        rows.append(dict(check="go_bp_wang", embedding=name, spearman=round(float(rho), 4),
                         n_pairs=int(len(pairs)), n_genes=int(len(set(a) | set(b))), seconds=round(secs, 1)))
        log(json.dumps(rows[-1]))
    return rows, pairs


def check_go_jaccard(embs, gmt_sets, id2sym, n_pairs, seed):
    """Jaccard index of propagated GO BP set memberships (no R) vs cosine."""
    import scipy.sparse as sp
    from scipy.stats import spearmanr

    genes = embs["sigel"].index
    sym = id2sym.reindex(genes)
    names = list(gmt_sets)
    s2i = {}
    for j, n in enumerate(names):
        for g in gmt_sets[n]:
            s2i.setdefault(g, []).append(j)
    ann = [(i, j) for i, s in enumerate(sym.to_numpy()) if isinstance(s, str) for j in s2i.get(s, ())]
    if not ann:
        return []
    r, c = np.array(ann).T
    M = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(genes), len(names)))
    has = np.flatnonzero(np.asarray(M.sum(1)).ravel() > 0)
    rng = np.random.default_rng([seed, 11])
    i, j = rng.choice(has, n_pairs), rng.choice(has, n_pairs)
    ok = i != j
    i, j = i[ok], j[ok]
    inter = np.asarray(M[i].multiply(M[j]).sum(1)).ravel()
    size = np.asarray(M.sum(1)).ravel()
    jac = inter / (size[i] + size[j] - inter)
    rows = []
    for name, e in embs.items():
        rho = spearmanr(cos_pairs(e, genes[i], genes[j]), jac).correlation
        rows.append(dict(check="go_bp_jaccard", embedding=name, spearman=round(float(rho), 4),
                         n_pairs=int(len(i)), n_genes_annotated=int(len(has))))
        log(json.dumps(rows[-1]))
    return rows


def neighbor_examples(sigel, model, symbols, markers, k=8):
    out = {}
    try:
        tab = sigel.tl.neighbors(model, markers, k=k, gene_symbols=symbols)
    except Exception as e:
        return {"error": str(e)}
    for q, sub in tab.groupby("query_symbol", sort=False):
        out[q] = [f"{s} ({c:.2f})" for s, c in zip(sub["neighbor_symbol"], sub["cosine"])]
    return out


def markdown(rows, meta):
    df = pd.DataFrame(rows)
    order = {"sigel": 0, "pca": 1, "random": 2}
    df = df.sort_values("embedding", key=lambda s: s.map(order), kind="stable")
    lines = [f"### Semantics on DLPFC {meta['sample']} (`bench_semantics.py`)", "",
             f"{meta['n_genes']} embedded genes ({meta['n_with_symbol']} with a symbol), D = {meta['dim']}; "
             f"model: {meta['model']} (fit {meta['fit_seconds']:.0f} s; 0 = loaded). "
             f"Wall time {meta['total_seconds']:.0f} s on this machine.", ""]
    en = df[df["check"] == "enrichment"]
    if len(en):
        lines += ["**Fraction of gene clusters (>= 5 genes) enriched for a GO BP set at FDR < 0.05** "
                  "(cosine k-means; `model_contexts` = SIGEL's own mixture contexts)", "",
                  "| resolution | " + " | ".join(en["embedding"].unique()) + " |",
                  "|---|" + "---|" * en["embedding"].nunique()]
        for res in en["resolution"].unique():
            cells = []
            for e in en["embedding"].unique():
                r = en[(en["resolution"] == res) & (en["embedding"] == e)]
                cells.append(f"{r['frac_enriched'].iloc[0]:.2f} ({int(r['n_enriched'].iloc[0])}/{int(r['n_groups'].iloc[0])})"
                             if len(r) else "–")
            lines.append(f"| {res} | " + " | ".join(cells) + " |")
        lines.append("")
    gg = df[df["check"] == "ggipnn"]
    if len(gg):
        r0 = {k: int(gg.iloc[0][k]) for k in ("n_train_pairs", "n_train_input", "n_valid", "n_valid_input",
                                               "n_valid_pos")}
        lines += [f"**GGIPNN interactions** (train on {r0['n_train_pairs']:,} covered train pairs of "
                  f"{r0['n_train_input']:,}; AUROC / AUPRC on {r0['n_valid']:,} covered valid pairs of "
                  f"{r0['n_valid_input']:,}, {r0['n_valid_pos']:,} positive)", "",
                  "| classifier | " + " | ".join(gg["embedding"].unique()) + " |",
                  "|---|" + "---|" * gg["embedding"].nunique()]
        for clf in gg["classifier"].unique():
            cells = []
            for e in gg["embedding"].unique():
                r = gg[(gg["classifier"] == clf) & (gg["embedding"] == e)]
                cells.append(f"{r['auroc'].iloc[0]:.3f} / {r['auprc'].iloc[0]:.3f}" if len(r) else "–")
            lines.append(f"| {clf} | " + " | ".join(cells) + " |")
        lines.append("")
    go = df[df["check"].isin(["go_bp_wang", "go_bp_jaccard"])]
    if len(go):
        lines += ["**GO BP semantic similarity vs cosine (Spearman)**", "",
                  "| measure | pairs | " + " | ".join(go["embedding"].unique()) + " |",
                  "|---|---|" + "---|" * go["embedding"].nunique()]
        for chk, lab in [("go_bp_wang", "GOSemSim Wang (R, org.Hs.eg.db)"),
                         ("go_bp_jaccard", "Jaccard of propagated GO BP sets")]:
            sub = go[go["check"] == chk]
            if len(sub):
                cells = [f"{sub.loc[sub['embedding'] == e, 'spearman'].iloc[0]:+.3f}" for e in sub["embedding"]]
                lines.append(f"| {lab} | {int(sub['n_pairs'].iloc[0]):,} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--sample", default="151673")
    ap.add_argument("--model", default=None,
                    help="saved model directory (default benchmarks/out/models/semantics_dlpfc_<sample>); "
                         "fitted with the default settings and saved there when missing")
    ap.add_argument("--resolutions", nargs="+", type=int, default=[10, 30, 60])
    ap.add_argument("--min-group", type=int, default=5)
    ap.add_argument("--classifiers", nargs="+", default=["logistic", "mlp"])
    ap.add_argument("--go-pairs", type=int, default=3000)
    ap.add_argument("--jaccard-pairs", type=int, default=50000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["enrichment", "ggipnn", "gosemsim", "jaccard"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the records here")
    args = ap.parse_args(argv)

    import anndata as ad
    import torch

    import sigel

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = Path(args.data)
    ref = data / "reference"
    adata = ad.read_h5ad(data / "dlpfc" / f"dlpfc_{args.sample}_counts.h5ad")
    model_dir = Path(args.model) if args.model else HERE / "out" / "models" / f"semantics_dlpfc_{args.sample}"
    model, fit_s = load_or_fit(sigel, adata, model_dir, args.seed, args.threads)
    sig = model.embeddings_.astype(np.float64)
    sig = to_data_ids(sig, adata)
    genes = sig.index
    D = sig.shape[1]
    id2sym = adata.var["gene_symbol"].astype(object).where(adata.var["gene_symbol"].notna(), None)
    id2sym.index = id2sym.index.astype(str)
    symbols = {g: s for g, s in id2sym.reindex(genes).items() if isinstance(s, str) and s}
    log(f"{len(genes)} embedded genes, {len(symbols)} with a symbol, D = {D}")
    embs = {"sigel": sig, "pca": pca_embedding(adata, genes, D, args.seed),
            "random": random_embedding(genes, D, args.seed)}
    ctx = to_data_ids(model.contexts_[["context"]], adata)["context"].map(lambda k: f"context_{k}")
    meta = dict(sample=args.sample, n_genes=int(len(genes)), n_with_symbol=int(len(symbols)), dim=int(D),
                model=str(model_dir), fit_seconds=float(fit_s))
    gmt = ref / "gene_sets" / "human_GO_BP_propagated_10-500_symbols.gmt.gz"
    rows = []
    meta["neighbors"] = neighbor_examples(sigel, sig, symbols,
                                          [g for g in ["MBP", "SNAP25", "PCP4", "GFAP", "MOBP", "NEFL"]
                                           if g in set(symbols.values())])
    log(json.dumps(meta["neighbors"]))
    if "enrichment" not in args.skip:
        rows += check_enrichment(sigel, embs, ctx, str(gmt), symbols, args.resolutions, args.seed, args.min_group)
    if "ggipnn" not in args.skip:
        rows += check_interactions(sigel, embs, ref, symbols, args.seed, args.classifiers)
    if "gosemsim" not in args.skip:
        r, _ = check_go_gosemsim(embs, pd.Series(symbols), args.go_pairs, args.seed + 1)
        rows += r
    if "jaccard" not in args.skip:
        rows += check_go_jaccard(embs, sigel.tl.read_gmt(str(gmt)), pd.Series(symbols), args.jaccard_pairs,
                                 args.seed)
    meta["total_seconds"] = time.perf_counter() - t0
    for r in rows:
        print(json.dumps(r))
    print(json.dumps({"meta": meta}))
    md = markdown(rows, meta)
    print()
    print(md)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "records": rows, "markdown": md}, fh, indent=1)


if __name__ == "__main__":
    main()
