"""Cross-sample alignment, shifted genes and altered interactions on real data (issue 7).

1. Null check -- adjacent sections of one donor (DLPFC 151673 vs 151675,
   Maynard et al. 2021): nothing biological changes, so few genes should be
   called shifted. Reports the held-out anchor error (housekeeping anchors),
   same-gene retrieval across sections, the fraction of genes shifted at
   q < 0.05 (with and without the split-half noise model), and saves a
   picture of the intermixed aligned embeddings.
2. Normal vs cancer prostate (10x Visium FFPE, Giotto mini subset): top
   shifted genes and top altered pairs with their contexts, and whether the
   Hallmark androgen-response genes are enriched among shifted genes
   (hypergeometric test, and rank AUROC).

    .venv/bin/python benchmarks/bench_align.py --data ../shared/data [--task dlpfc|prostate|all]
        [--model-ref DIR --model-query DIR]  [--epochs 30] [--threads 2]

Fitted models are saved under ``<out>/models/<task>_{ref,query}`` and reused
on the next run (``--model-ref/--model-query`` point at other saved fits for
a single task). Prints JSON and a markdown section; figures go to ``<out>``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import anndata as ad
import numpy as np
import pandas as pd

import sigel
from sigel.tasks.align import shifted_genes

from bench_fit_dlpfc import parse_settings  # noqa: E402 (benchmarks/ is on sys.path when run as a script)


def _log(msg):
    print(f"[bench_align {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _symbols(adata):
    """Index genes by symbol (DLPFC: Ensembl ids -> var['gene_symbol']), unique, non-empty."""
    if "gene_symbol" in adata.var:
        sym = adata.var["gene_symbol"].astype(str)
        ok = sym.notna() & (sym != "nan") & (sym != "") & ~sym.duplicated(keep=False)
        adata = adata[:, ok.to_numpy()].copy()
        adata.var_names = sym[ok].to_numpy()
    adata.var_names_make_unique()
    return adata


def _top_genes(a1, a2, n):
    """Genes detected in both samples, the n with the highest minimum detection rate."""
    shared = a1.var_names.intersection(a2.var_names)

    def det(a):
        X = a[:, shared].X
        return pd.Series(np.asarray((X > 0).sum(0)).ravel() / a.n_obs, index=shared)

    d = np.minimum(det(a1), det(a2))
    d = d[d > 0.01].sort_values(ascending=False)
    return list(d.index[:n]) if n else list(d.index)


def _fit_or_load(adata, path, hyper, seed, threads, fit_kw):
    if path and os.path.isdir(path):
        _log(f"loading {path}")
        m = sigel.SIGEL.load(path)
        return m, 0.0
    t = time.perf_counter()
    m = sigel.SIGEL(**hyper).fit(adata, seed=seed, n_threads=threads, device="cpu", **fit_kw)
    sec = time.perf_counter() - t
    if path:
        m.save(path, overwrite=True)
    _log(f"fitted {adata.n_vars} genes in {sec:.0f} s -> {path}")
    return m, sec


def _retrieval(al, k=10):
    """Same-gene retrieval: is a gene's aligned query vector nearest its own reference vector?"""
    from sigel.tasks._genes import unit_rows

    R = unit_rows(al.reference.loc[al.shared].to_numpy())
    Q = unit_rows(al.heldout.to_numpy())
    top1, topk = [], []
    for s in range(0, len(Q), 1024):
        S = Q[s:s + 1024] @ R.T
        own = S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])]
        rank = (S > own[:, None]).sum(1)
        top1.append(rank == 0)
        topk.append(rank < k)
    return float(np.mean(np.concatenate(top1))), float(np.mean(np.concatenate(topk)))


def _mixing(al, k=15, n=2000, seed=0):
    """Fraction of each vector's k nearest neighbours (union of both samples) from the other sample
    (0.5 = perfectly intermixed, 0 = separate clouds)."""
    from sigel.tasks._genes import unit_rows

    rng = np.random.default_rng(seed)
    g = al.shared
    if len(g) > n:
        g = g[np.sort(rng.choice(len(g), n, replace=False))]
    X = unit_rows(np.vstack([al.reference.loc[g].to_numpy(), al.heldout.loc[g].to_numpy()]))
    lab = np.r_[np.zeros(len(g)), np.ones(len(g))]
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    # exclude each gene's own counterpart (it is the same gene in the other sample)
    m = len(g)
    S[np.arange(m), np.arange(m) + m] = -np.inf
    S[np.arange(m) + m, np.arange(m)] = -np.inf
    nn = np.argsort(-S, axis=1)[:, :k]
    return float(np.mean(lab[nn] != lab[:, None]))


def _figures(al, tab, pairs, out, name):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    for key, fig in (("intermixed", sigel.pl.aligned_embeddings(al, n_highlight=8)),
                     ("ranking", sigel.pl.shifted_genes(tab)),
                     ("pairs", sigel.pl.altered_interactions(pairs))):
        f = os.path.join(out, f"align_{name}_{key}.png")
        fig.savefig(f, dpi=130)
        plt.close(fig)
        files[key] = f
    return files


def _summary(al, tab, pairs):
    nonanchor = tab[~tab["anchor"]]
    return dict(
        n_shared=al.diagnostics["n_shared"], n_anchors=al.diagnostics["n_anchors"],
        n_anchors_requested=al.diagnostics["n_anchors_requested"],
        heldout_rmse=round(al.diagnostics["heldout_rmse"], 4),
        heldout_relative_error=round(al.diagnostics["heldout_relative_error"], 4),
        heldout_nn_accuracy=round(al.diagnostics["heldout_nn_accuracy"], 4),
        frac_shifted_q05=round(float((tab["qval"] < 0.05).mean()), 4),
        frac_shifted_q05_nonanchor=round(float((nonanchor["qval"] < 0.05).mean()), 4),
        frac_anchor_shifted_q05=round(float((tab.loc[tab["anchor"], "qval"] < 0.05).mean()), 4),
        pairs_tested=int(pairs.attrs["n_tested"]),
        frac_pairs_altered_q05=round(pairs.attrs["n_significant"] / max(pairs.attrs["n_tested"], 1), 4),
    )


# ------------------------------------------------------------------ DLPFC null check

def bench_dlpfc(args, hyper):
    d = os.path.join(args.data, "dlpfc")
    a1 = _symbols(ad.read_h5ad(os.path.join(d, "dlpfc_151673_counts.h5ad")))
    a2 = _symbols(ad.read_h5ad(os.path.join(d, "dlpfc_151675_counts.h5ad")))
    genes = _top_genes(a1, a2, args.n_genes)
    a1, a2 = a1[:, genes].copy(), a2[:, genes].copy()
    _log(f"DLPFC: {len(genes)} genes, {a1.n_obs} / {a2.n_obs} spots")
    fit_kw = dict(library_size_key="sum_umi")
    mdir = os.path.join(args.out, "models")
    m1, t1 = _fit_or_load(a1, args.model_ref or os.path.join(mdir, "dlpfc_151673"), hyper, args.seed,
                          args.threads, fit_kw)
    m2, t2 = _fit_or_load(a2, args.model_query or os.path.join(mdir, "dlpfc_151675"), hyper, args.seed + 1,
                          args.threads, fit_kw)
    res = dict(data="DLPFC 151673 (reference) vs 151675 (query)", genes=len(genes), fit_seconds=[t1, t2])
    t = time.perf_counter()
    al = sigel.tl.align(m1, m2, reference_data=a1, query_data=a2, seed=args.seed)
    res["align_seconds"] = round(time.perf_counter() - t, 1)
    tab = sigel.tl.shifted_genes(al)
    pairs = sigel.tl.altered_interactions(al, top=None)
    res["housekeeping_noise"] = _summary(al, tab, pairs)
    tab0 = sigel.tl.shifted_genes(al, use_noise=False)
    res["housekeeping_noise"]["frac_shifted_q05_without_noise_model"] = round(float((tab0["qval"] < 0.05).mean()), 4)
    top1, top10 = _retrieval(al)
    res["housekeeping_noise"].update(same_gene_top1=round(top1, 4), same_gene_top10=round(top10, 4),
                                     knn_mixing=round(_mixing(al), 4),
                                     top_shifted=list(tab.index[:15]))
    for meth in ("linear", "mlp"):
        alm = sigel.tl.align(m1, m2, method=meth, seed=args.seed)
        res[f"{meth}_no_noise"] = dict(heldout_relative_error=round(alm.diagnostics["heldout_relative_error"], 4),
                                       frac_shifted_q05=round(float((sigel.tl.shifted_genes(alm)["qval"] < 0.05)
                                                                    .mean()), 4))
    res["figures"] = _figures(al, tab, pairs, args.out, "dlpfc")
    tab.to_csv(os.path.join(args.out, "align_dlpfc_shifted.tsv"), sep="\t")
    return res


# ------------------------------------------------------------------ prostate normal vs cancer

def _read_gmt(path):
    sets = {}
    with open(path) as fh:
        for ln in fh:
            f = ln.rstrip("\n").split("\t")
            if len(f) > 2:
                sets[f[0]] = set(x for x in f[2:] if x)
    return sets


def _enrichment(tab, members, alpha=0.05, top=50):
    from scipy.stats import hypergeom
    from sklearn.metrics import roc_auc_score

    univ = tab.index
    inset = univ.isin(list(members))
    out = dict(universe=int(len(univ)), set_in_universe=int(inset.sum()))
    for name, drawn in (("q05", (tab["qval"] < alpha).to_numpy()),
                        (f"top{top}", np.arange(len(tab)) < top)):
        k = int((drawn & inset).sum())
        n_draw = int(drawn.sum())
        p = float(hypergeom.sf(k - 1, len(univ), int(inset.sum()), n_draw)) if n_draw else float("nan")
        exp = n_draw * inset.sum() / len(univ)
        out[name] = dict(n_drawn=n_draw, overlap=k, expected=round(float(exp), 2), pval=p,
                         genes=list(tab.index[drawn & inset][:20]))
    if 0 < inset.sum() < len(univ):
        out["auroc_score"] = round(float(roc_auc_score(inset, tab["score"])), 4)
    return out


def bench_prostate(args, hyper):
    a = ad.read_h5ad(os.path.join(args.data, "cross_sample",
                                  "visium_ffpe_prostate_normal_vs_cancer_giotto_mini.h5ad"))
    a.var_names_make_unique()
    cond = a.obs["condition"].astype(str)
    a1 = a[(cond == "normal_prostate").to_numpy()].copy()
    a2 = a[(cond == "prostate_cancer").to_numpy()].copy()
    for x in (a1, a2):  # each section keeps its own array coordinates; drop the shared pixel frame
        x.obsm.pop("spatial", None)
        x.obsm["spatial"] = x.obs[["array_col", "array_row"]].to_numpy(float)
    genes = _top_genes(a1, a2, 0)
    a1, a2 = a1[:, genes].copy(), a2[:, genes].copy()
    _log(f"prostate: {len(genes)} genes, normal {a1.n_obs} / cancer {a2.n_obs} spots")
    mdir = os.path.join(args.out, "models")
    m1, t1 = _fit_or_load(a1, args.model_ref or os.path.join(mdir, "prostate_normal"), hyper, args.seed,
                          args.threads, {})
    m2, t2 = _fit_or_load(a2, args.model_query or os.path.join(mdir, "prostate_cancer"), hyper, args.seed + 1,
                          args.threads, {})
    res = dict(data="Visium FFPE prostate: normal (reference) vs adenocarcinoma (query)", genes=len(genes),
               fit_seconds=[t1, t2])
    gmt = _read_gmt(os.path.join(args.data, "reference", "gene_sets", "h.all.v7.5.1.symbols.cleaned.gmt"))
    androgen = gmt["HALLMARK_ANDROGEN_RESPONSE"]
    runs = {
        "housekeeping": dict(anchors=None),
        "shared_trim20": dict(anchors="shared", trim=0.2),
    }
    for name, kw in runs.items():
        try:
            al = sigel.tl.align(m1, m2, reference_data=a1, query_data=a2, seed=args.seed, **kw)
        except sigel.SigelInputError as e:
            res[name] = dict(error=str(e))
            continue
        tab = sigel.tl.shifted_genes(al)
        pairs = sigel.tl.altered_interactions(al, top=None)
        r = _summary(al, tab, pairs)
        r["settings"] = {k: v for k, v in kw.items()}
        cols = [c for c in ("shift", "score", "qval", "context_reference", "context_query") if c in tab]
        r["top_shifted"] = tab[cols].head(20).round(4).reset_index().to_dict(orient="records")
        pc = [c for c in ("gene_a", "gene_b", "cos_reference", "cos_query", "delta", "qval",
                          "context_reference_a", "context_reference_b") if c in pairs]
        r["top_pairs"] = pairs[pc].head(20).round(4).to_dict(orient="records")
        try:
            mod = sigel.tl.interaction_modules(pairs)
            r["modules"] = mod.head(10).round(4).to_dict(orient="records")
        except sigel.SigelInputError:
            pass
        r["androgen_response"] = _enrichment(tab, androgen)
        r["figures"] = _figures(al, tab, pairs.head(20000), args.out, f"prostate_{name}")
        tab.to_csv(os.path.join(args.out, f"align_prostate_{name}_shifted.tsv"), sep="\t")
        pairs.head(2000).to_csv(os.path.join(args.out, f"align_prostate_{name}_pairs.tsv"), sep="\t")
        res[name] = r
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    p.add_argument("--task", choices=("dlpfc", "prostate", "all"), default="all")
    p.add_argument("--model-ref", default=None, help="saved model dir of the reference (single task)")
    p.add_argument("--model-query", default=None, help="saved model dir of the query (single task)")
    p.add_argument("--n-genes", type=int, default=3000, help="DLPFC: genes kept (highest detection in both)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hyper", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameters other than the defaults, e.g. rarefy=auto")
    args = p.parse_args()
    if (args.model_ref or args.model_query) and args.task == "all":
        p.error("--model-ref/--model-query need a single --task")
    os.makedirs(args.out, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    hyper = dict(epochs=args.epochs, pretrain_epochs=max(1, args.epochs // 4), embed_dim=args.embed_dim,
                 **parse_settings(args.hyper))
    t0 = time.perf_counter()
    out = dict(machine=f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
               hyper=hyper, sigel=sigel.__version__)
    if args.task in ("prostate", "all"):
        out["prostate"] = bench_prostate(args, hyper)
        with open(os.path.join(args.out, "bench_align_prostate.json"), "w") as fh:
            json.dump(out["prostate"], fh, indent=1, default=str)
    if args.task in ("dlpfc", "all"):
        out["dlpfc_null"] = bench_dlpfc(args, hyper)
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    with open(os.path.join(args.out, "bench_align.json"), "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
