#!/usr/bin/env python
"""Benchmark: fit the default SIGEL model on DLPFC 151673 (10x Visium, ~8.5k genes).

Records speed (wall time per epoch and in total, peak memory, ``transform``
genes/s) and an external quality figure that uses no labels the model saw:
the fraction of contexts (>= 5 genes) enriched for at least one GO biological
process set at FDR < 0.05 (hypergeometric test, Benjamini-Hochberg within
each context, the embedded genes as the universe), next to the same figure
for a PCA-of-expression + k-means baseline with the same number of contexts.
It also reports the docs/design.md §4 diagnostic: cross-validated R^2 of each
gene's detection rate and mean level from its vector (low is good) and of its
Moran's I (spatial signal; high is good), for both representations.

Data: Maynard et al. 2021, Nat Neurosci 24:425 (spatialLIBD).

Usage::

    python benchmarks/bench_fit_dlpfc.py --data ../shared/data [--out results.json] [--threads 2]

Targets on the 2-core development machine: fit <= 10 min, peak memory <= 4 GB,
transform >= 2,000 genes/s.
"""
from __future__ import annotations

import argparse
import gzip
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import hypergeom


# ----------------------------------------------------------------- helpers
def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB; Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024 / 1e9 if sys.platform != "darwin" else kb / 1e9


def read_gmt(path) -> dict:
    """GMT (optionally gzipped) -> {set name: list of gene symbols}."""
    opener = gzip.open if str(path).endswith(".gz") else open
    sets = {}
    with opener(path, "rt") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) > 2:
                sets[parts[0]] = parts[2:]
    return sets


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values along the last axis."""
    p = np.asarray(p, dtype=float)
    n = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, -1) * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    q = np.empty_like(ranked)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), -1)
    return q


def context_enrichment(labels: pd.Series, symbols: pd.Series, gene_sets: dict, *, min_context: int = 5,
                       min_set: int = 5, fdr: float = 0.05) -> dict:
    """Fraction of contexts (>= ``min_context`` genes) enriched for >= 1 gene set at FDR < ``fdr``.

    Vectorised: one sparse (sets x universe) @ (universe x contexts) product
    gives every overlap; hypergeometric tail probabilities for all pairs at
    once; BH within each context.
    """
    df = pd.DataFrame({"label": labels.values, "symbol": symbols.reindex(labels.index).values})
    df = df.dropna().drop_duplicates("symbol")
    universe = pd.Index(df["symbol"].astype(str))
    N = len(universe)
    rows, cols, names = [], [], []
    for name, genes in gene_sets.items():
        idx = universe.get_indexer(pd.Index(genes).unique())
        idx = idx[idx >= 0]
        if len(idx) >= min_set:
            rows.append(np.full(len(idx), len(names)))
            cols.append(idx)
            names.append(name)
    S = len(names)
    M = sp.csr_matrix((np.ones(sum(map(len, cols))), (np.concatenate(rows), np.concatenate(cols))), shape=(S, N))
    labs = pd.Categorical(df["label"])
    C = sp.csr_matrix((np.ones(N), (np.arange(N), labs.codes)), shape=(N, len(labs.categories)))
    sizes = np.asarray(C.sum(0)).ravel()
    keep = sizes >= min_context
    overlap = (M @ C).toarray()[:, keep]  # (S, K')
    set_size = np.asarray(M.sum(1)).ravel()[:, None]
    n = sizes[keep][None, :]
    p = hypergeom.sf(overlap - 1, N, set_size, n)
    p = np.where(overlap > 0, p, 1.0)
    q = bh(p.T)  # (K', S), BH within each context
    enriched = (q < fdr).any(1)
    best = [names[i] for i in q.argmin(1)]
    return {"n_contexts_tested": int(keep.sum()), "n_enriched": int(enriched.sum()),
            "fraction_enriched": float(enriched.mean()) if keep.any() else float("nan"),
            "n_gene_sets": S, "universe": N,
            "top_terms": [b for b, e in zip(best, enriched) if e][:10]}


def cv_r2(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R^2 of a ridge read-out of ``y`` from ``X``."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, X, y, cv=KFold(folds, shuffle=True, random_state=seed))
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def morans_i(Xn: np.ndarray, coords: np.ndarray, k: int = 6) -> np.ndarray:
    """Moran's I of every column of ``Xn`` (spots x genes) on a kNN spot graph (row-normalised)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(coords)
    _, ind = nn.kneighbors(coords)
    n = len(coords)
    W = sp.csr_matrix((np.full(n * k, 1.0 / k), (np.repeat(np.arange(n), k), ind[:, 1:].ravel())), shape=(n, n))
    Z = Xn - Xn.mean(0)
    num = np.einsum("ij,ij->j", Z, W @ Z)
    den = np.einsum("ij,ij->j", Z, Z)
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


# --------------------------------------------------------------------- main
def markdown_table(df: pd.DataFrame) -> str:
    """A pipe table with 3 decimals (no extra dependency)."""
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, (float, np.floating)) and np.isfinite(v) else ("" if v is None or (
            isinstance(v, float) and not np.isfinite(v)) else str(v))
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def parse_settings(pairs) -> dict:
    """``["key=value", ...]`` -> dict; values read as JSON where they parse (numbers, true/false), else strings."""
    out = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data", help="shared data folder")
    ap.add_argument("--sample", default="151673")
    ap.add_argument("--out", default=None, help="write the numbers to this JSON file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the default epoch limit (debugging)")
    ap.add_argument("--hyper", nargs="*", default=[], metavar="KEY=VALUE",
                    help="model hyper-parameters other than the defaults, e.g. input_norm=smooth epochs=20")
    ap.add_argument("--speed-only", action="store_true",
                    help="fit and transform timings only (skip the baselines and the quality figures)")
    ap.add_argument("--transform-repeats", type=int, default=3,
                    help="also time `transform` this many times and report the best")
    ap.add_argument("--save-model", default=None,
                    help="also save the fitted model here (e.g. for bench_semantics.py --model)")
    ap.add_argument("--model", default=None,
                    help="time `transform` with this saved model instead of fitting one (implies --speed-only)")
    args = ap.parse_args(argv)

    # sigel first: its thread policy (passive OpenMP waiting) must be set before torch starts its threads
    import sigel

    import anndata as ad
    import torch
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    sigel.settings.verbosity = 2
    sigel.settings.n_threads = args.threads  # fit and transform alike
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    adata = ad.read_h5ad(data / "dlpfc" / f"dlpfc_{args.sample}_counts.h5ad")
    rss_loaded = peak_rss_gb()

    hyper = {} if args.epochs is None else {"epochs": args.epochs}
    hyper.update(parse_settings(args.hyper))
    if args.model:
        model, fit_s, fit_cpu, args.speed_only = sigel.SIGEL.load(args.model), None, None, True
        model.images_ = model.images_for(adata)
    else:
        model = sigel.SIGEL(**hyper)
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(adata, library_size_key="sum_umi", device=args.device, seed=args.seed, progress=False,
                  n_threads=args.threads)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_fit = peak_rss_gb()
    if args.save_model and not args.model:
        model.save(args.save_model, overwrite=True)
    hist = model.history_
    G, D, K = len(model.embeddings_), model.embed_dim, model.n_contexts_

    # transform: images rebuilt from the AnnData + embedding; and the embedding alone. Each timed call starts
    # after a garbage collection (like timeit), so that freeing what the fit or an earlier call left behind is
    # not charged to it; the warm-up embeds 200 genes of a view (no copy of the data)
    import gc

    model.transform(adata[:, :200])  # warm-up
    gc.collect()
    t0 = time.perf_counter()
    emb_t = model.transform(adata)
    transform_s = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    model.embed_images(model.images_)
    embed_s = time.perf_counter() - t0
    repeats = []
    for _ in range(max(args.transform_repeats, 0)):
        gc.collect()
        t0 = time.perf_counter()
        model.transform(adata)
        repeats.append(time.perf_counter() - t0)
    speed = {
        "transform_seconds": transform_s, "transform_genes_per_s": len(emb_t) / transform_s,
        "transform_genes_per_s_repeats": [len(emb_t) / t for t in repeats],
        "transform_genes_per_s_best": len(emb_t) / min([transform_s] + repeats),
        "embed_images_genes_per_s": G / embed_s,
        "load_average_1_5_15": list(__import__("os").getloadavg()),
    }
    if args.speed_only:
        sec = hist["seconds"].to_numpy()
        res = {"sample": args.sample, "n_genes": G, "fit_seconds": fit_s, "epochs_run": int(model.epochs_run_),
               "seconds_per_epoch_mean": float(sec.mean()), **speed, "threads": args.threads,
               "embed_batch_size": model.init_params_["embed_batch_size"]}
        text = json.dumps(res, indent=1, default=float)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return res

    # ---- baseline: PCA of normalised log expression, genes as samples ----
    genes = model.embeddings_.index
    X = adata[:, genes].X
    X = sp.csr_matrix(X, dtype=np.float32)
    lib = adata.obs["sum_umi"].to_numpy(np.float64)
    Xn = sp.diags((np.median(lib) / lib).astype(np.float32)) @ X
    Xn = np.log1p(Xn.toarray())  # spots x genes
    Zg = (Xn - Xn.mean(0)) / (Xn.std(0) + 1e-8)
    pca = PCA(n_components=D, random_state=0).fit_transform(Zg.T)  # genes x D
    pca_labels = KMeans(K, n_init=10, random_state=0).fit_predict(pca)

    symbols = adata.var["gene_symbol"].reindex(genes)
    gmt = read_gmt(data / "reference" / "gene_sets" / "human_GO_BP_propagated_10-500_symbols.gmt.gz")
    enr_sigel = context_enrichment(model.contexts_["context"], symbols, gmt)
    enr_pca = context_enrichment(pd.Series(pca_labels, index=genes), symbols, gmt)

    # ---- docs/design.md §4 diagnostic ----
    counts = X.toarray()
    det = (counts > 0).mean(0)
    mean_level = np.log1p(counts.mean(0))
    coords = adata.obs[["array_row", "array_col"]].to_numpy(float) * np.array([np.sqrt(3) / 2 * 2, 1.0])
    mi = morans_i(Xn, coords)
    E = model.embeddings_.to_numpy()
    diag = {
        name: {"r2_detection_rate": cv_r2(V, det), "r2_mean_level": cv_r2(V, mean_level),
               "r2_morans_i": cv_r2(V, mi)}
        for name, V in (("sigel", E), ("pca", pca))
    }

    sec = hist["seconds"].to_numpy()
    res = {
        "sample": args.sample,
        "n_genes": G, "n_spots": int(adata.n_obs), "embed_dim": D, "n_contexts": K,
        "image_shape": [int(model.images_.height), int(model.images_.width)], "patch_size": model.patch_size_,
        "epochs_run": int(model.epochs_run_), "stop_reason": model.stop_reason_,
        "fit_seconds": fit_s, "fit_cpu_seconds": fit_cpu,
        "seconds_per_epoch_mean": float(sec.mean()),
        "seconds_per_epoch_median": float(np.median(sec)),
        "seconds_per_epoch_by_phase": hist.groupby("phase")["seconds"].mean().to_dict(),
        "peak_rss_gb_after_load": rss_loaded, "peak_rss_gb_after_fit": rss_fit,
        **speed,
        "go_bp_enrichment": {"sigel": enr_sigel, "pca_kmeans": enr_pca},
        "diagnostic_cv_r2": diag,
        "defaults": model.init_params_,
        "threads": args.threads, "device": args.device,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine()},
        "final_history_row": {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                              for k, v in hist.iloc[-1].to_dict().items()},
    }
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return res


if __name__ == "__main__":
    main()
