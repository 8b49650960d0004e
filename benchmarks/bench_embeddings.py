"""Representation benchmark: how much biology and how little sampling noise the gene vectors carry.

Scores any set of gene vectors side by side with baselines computed in the
same run, on the same genes (those the default gene images keep):

* ``expr_pca``    PCA-32 of z-scored log expression (genes as observations),
* ``expr_svd``    TruncatedSVD-32 of log expression (no centring or scaling),
* ``random``      Gaussian vectors,
* ``img_pca``     PCA-32 of the gene images (z-scored per gene over tissue),
* ``img_pca_s2``  the same after a sigma = 2 px masked Gaussian smoothing,
* one row per SIGEL variant fitted here (``--variant NAME:KEY=VALUE,...``;
  ``default`` = ``SIGEL()``), and any saved embedding table (``--embedding
  NAME=file.csv``, genes x dims).

Measures (vectors are centred first; "cosine" = cosine of centred vectors):

* ``family``: nomenclature families (the symbol without its trailing serial
  number, `families`; ``RPL10A`` -> ``RPL``, ``COL1A1`` -> ``COL1A``;
  immunoglobulins / LINC / LOC / ORFs excluded, >= 5 members): the
  fraction of a gene's 10 nearest neighbours in its own family, macro mean
  over families; ``family_shuffled`` the same with shuffled family labels.
* ``path_k20/50/100``: cosine k-means clusters (``--kmeans-seeds N``: mean
  over N k-means random states); the fraction of clusters with
  >= 5 genes enriched for a GO BP (propagated, 10-500 genes) or Hallmark set
  at BH FDR < 0.05 (hypergeometric, BH within cluster; universe = the genes
  with a human symbol). Mouse genes are mapped by 1:1 homologs.
* ``r2_detection``, ``r2_mean``, ``r2_moran``: 5-fold ridge R^2 of each gene's
  detection rate, log mean level and Moran's I read off the vector (the first
  two low is good, the last high is good).
* ``knn_detection``: Spearman correlation between each gene's detection rate
  and the mean detection rate of its 10 nearest (cosine) neighbours (a
  non-linear read-out: how far neighbourhoods are sorted by sparsity; low is
  good). A rank correlation, because neighbour means are biased towards
  dense "hub" genes in some spaces, which an R^2 would count as well.
* ``erank``: exp of the entropy of the normalised singular values of the
  centred vectors (32 = all directions used equally); ``mean_cos``: mean raw
  cosine between genes.
* ``fit_s``, ``peak_gb``: SIGEL fit seconds and the process's peak RSS after it.

``--trace-epochs 1,4,8`` also scores each variant's vectors after those
epochs of training (the trainer's per-epoch embedding pass, one draw; rows
``<name>@e<epoch>``), to see whether a measure is gained or lost in
pre-training or in refinement.

Data sets (``--dataset``): ``dlpfc151673``, ``dlpfc151674``, ``dlpfc151675``
(Visium, ``sum_umi`` library size), ``mob`` (Stahl 2016 replicate 11, all
262 spots and every gene the images keep) and ``mob_svg`` (the same section as
benchmarks/bench_svg.py reads it: the 260 spots and the genes of the published
SpatialDE analysis, grid geometry), so that the SVG benchmark's saved bulb
models can be scored with ``--embedding``.

    .venv/bin/python benchmarks/bench_embeddings.py --data ../shared/data --dataset dlpfc151673 \\
        --variant default --out benchmarks/out/emb_151673.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from bench_fit_dlpfc import (context_enrichment, cv_r2, markdown_table, morans_i, parse_settings,  # noqa: E402
                             peak_rss_gb, read_gmt)


def log(msg):
    print(f"[bench_embeddings] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data sets
def load_dataset(data: Path, name: str):
    """AnnData, fit keyword arguments, human symbol per gene (Series), coordinates for Moran's I."""
    import anndata as ad

    if name.startswith("dlpfc"):
        a = ad.read_h5ad(data / "dlpfc" / f"dlpfc_{name[5:]}_counts.h5ad")
        sym = a.var["gene_symbol"].astype(object).where(a.var["gene_symbol"].notna(), None)
        sym = pd.Series(sym.to_numpy(), index=a.var_names.astype(str))
        coords = a.obs[["array_row", "array_col"]].to_numpy(float) * np.array([np.sqrt(3) / 2 * 2, 1.0])
        return a, {"library_size_key": "sum_umi"}, sym, sym, coords
    if name in ("mob", "mob_svg"):
        if name == "mob_svg":
            from bench_svg import load_mob

            a, _ = load_mob(data)
            fit_kw = {"geometry": "grid"}
        else:
            a, fit_kw = ad.read_h5ad(data / "svg" / "mob_rep11_stahl2016.h5ad"), {}
        hom = pd.read_csv(data / "reference" / "mouse_to_human_homologs_EWCE.tsv.gz", sep="\t")
        m2h = dict(zip(hom["MGI.symbol"].astype(str), hom["HGNC.symbol"].astype(str)))
        genes = a.var_names.astype(str)
        human = pd.Series([m2h.get(g) for g in genes], index=genes, dtype=object)
        fam = pd.Series(list(genes), index=genes, dtype=object)  # nomenclature families from mouse symbols
        coords = a.obs[["x", "y"]].to_numpy(float)
        return a, fit_kw, human, fam, coords
    raise SystemExit(f"unknown dataset {name!r}")


def families(symbols: pd.Series, min_size: int = 5) -> pd.Series:
    """Nomenclature family of each gene (NaN when none): the symbol without its trailing serial number.

    ``RPL10A`` and ``RPL5`` -> ``RPL``; ``COL1A1`` -> ``COL1A``; ``NDUFB9`` ->
    ``NDUFB``; ``HLA-DRB1`` -> ``HLA-DRB``. Symbols without a trailing number
    have no family; immunoglobulin segments, ``LINC``/``LOC`` and open reading
    frames (``C1orf..``) are left out; families need ``min_size`` members.
    """
    out = {}
    for g, s in symbols.items():
        if not isinstance(s, str):
            continue
        m = re.match(r"^([A-Za-z][A-Za-z0-9-]*?[A-Za-z-])\d+[A-Za-z]?$", s)
        if not m:
            continue
        p = m.group(1).upper().rstrip("-")
        if len(p) < 2 or p.startswith(("IGH", "IGK", "IGL", "LINC", "LOC")) or "ORF" in p:
            continue
        out[g] = p
    f = pd.Series(out, dtype=object).reindex(symbols.index)
    counts = f.value_counts()
    return f.where(f.map(counts).fillna(0) >= min_size)


# ------------------------------------------------------------------ measures
def _centred_unit(E: np.ndarray) -> np.ndarray:
    Z = E - E.mean(0)
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def family_coherence(E: np.ndarray, fam: pd.Series, k: int = 10, seed: int = 0) -> tuple[float, float]:
    """Macro-mean fraction of the 10 nearest (cosine) neighbours sharing the family; and with shuffled labels."""
    from sklearn.neighbors import NearestNeighbors

    U = _centred_unit(E)
    _, ind = NearestNeighbors(n_neighbors=k + 1).fit(U).kneighbors(U)
    ind = ind[:, 1:]
    lab = fam.to_numpy(dtype=object)

    def score(lab):
        has = np.array([isinstance(x, str) for x in lab])
        same = (lab[ind] == lab[:, None]) & has[:, None]
        per_gene = same.mean(1)
        df = pd.DataFrame({"f": lab[has], "s": per_gene[has]})
        return float(df.groupby("f")["s"].mean().mean())

    rng = np.random.default_rng(seed)
    has = np.array([isinstance(x, str) for x in lab])
    shuf = lab.copy()
    shuf[has] = rng.permutation(lab[has])
    return score(lab), score(shuf)


def knn_agreement(E: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Spearman correlation of ``y`` with the mean ``y`` of each gene's ``k`` nearest cosine neighbours (not itself)."""
    from scipy.stats import spearmanr
    from sklearn.neighbors import NearestNeighbors

    U = _centred_unit(E)
    _, ind = NearestNeighbors(n_neighbors=k + 1).fit(U).kneighbors(U)
    y = np.asarray(y, dtype=np.float64)
    return float(spearmanr(y, y[ind[:, 1:]].mean(1))[0])


def pathway_coherence(E: np.ndarray, genes: pd.Index, symbols: pd.Series, gene_sets: dict, ks=(20, 50, 100),
                      seed: int = 0, n_seeds: int = 1) -> dict:
    """Fraction of enriched k-means clusters at each k, averaged over ``n_seeds`` k-means random states."""
    from sklearn.cluster import KMeans

    U = _centred_unit(E)
    out = {}
    for k in ks:
        fr = []
        for s in range(seed, seed + n_seeds):
            lab = KMeans(k, n_init=4, random_state=s).fit_predict(U)
            fr.append(context_enrichment(pd.Series(lab, index=genes), symbols, gene_sets)["fraction_enriched"])
        out[f"path_k{k}"] = float(np.mean(fr))
    return out


def effective_rank(E: np.ndarray) -> float:
    s = np.linalg.svd(E - E.mean(0), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_raw_cosine(E: np.ndarray, n: int = 2000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(E), size=min(n, len(E)), replace=False)
    U = E[idx] / np.maximum(np.linalg.norm(E[idx], axis=1, keepdims=True), 1e-12)
    C = U @ U.T
    return float((C.sum() - np.trace(C)) / (len(idx) * (len(idx) - 1)))


def score_all(name, E, ctx) -> dict:
    t0 = time.perf_counter()
    fam, fam_sh = family_coherence(E, ctx["families"])
    rec = {"representation": name, "family": fam, "family_shuffled": fam_sh}
    rec.update(pathway_coherence(E, ctx["genes"], ctx["symbols"], ctx["gene_sets"],
                                 n_seeds=ctx.get("kmeans_seeds", 1)))
    rec.update(r2_detection=cv_r2(E, ctx["detection"]), r2_mean=cv_r2(E, ctx["mean"]),
               r2_moran=cv_r2(E, ctx["moran"]), knn_detection=knn_agreement(E, ctx["detection"]),
               erank=effective_rank(E), mean_cos=mean_raw_cosine(E))
    log(f"scored {name} in {time.perf_counter() - t0:.1f} s: " +
        ", ".join(f"{k} {v:.3f}" for k, v in rec.items() if isinstance(v, float)))
    return rec


def residualize(E: np.ndarray, ctx) -> np.ndarray:
    """``E`` minus its least-squares fit on each gene's detection rate and log mean level (with intercept).

    Removes what a linear read-out finds of the two sampling-depth covariates,
    so its ``r2_detection`` / ``r2_mean`` are ~0 by construction; the other
    measures say what the vectors carry beyond them.
    """
    F = np.c_[np.ones(len(E)), ctx["detection"], ctx["mean"]]
    B, *_ = np.linalg.lstsq(F, E, rcond=None)
    return E - F[:, 1:] @ B[1:]


# ------------------------------------------------------------------ baselines
def image_features(images, sigma: float) -> np.ndarray:
    """Genes x tissue pixels: each image z-scored over the tissue, after a masked Gaussian of ``sigma`` px (0: none)."""
    from scipy.ndimage import gaussian_filter

    m = images.mask.astype(np.float32)
    tis = images.mask.ravel()
    out = np.empty((images.n_genes, int(tis.sum())), dtype=np.float32)
    den = gaussian_filter(m, sigma) if sigma > 0 else None
    for s in range(0, images.n_genes, 512):  # batches of dense images (genes x H x W)
        V = images.dense(np.arange(s, min(s + 512, images.n_genes))).astype(np.float32)
        if sigma > 0:
            V = gaussian_filter(V * m, (0, sigma, sigma)) / np.maximum(den, 1e-6)
        F = V.reshape(len(V), -1)[:, tis]
        F = (F - F.mean(1, keepdims=True)) / (F.std(1, keepdims=True) + 1e-8)
        out[s:s + len(V)] = F
    return out


def image_pca(images, D: int, sigma: float, seed: int = 0) -> np.ndarray:
    """PCA-D of the gene images, z-scored per gene over tissue, optionally after masked Gaussian smoothing."""
    from sklearn.decomposition import PCA

    return PCA(n_components=D, random_state=seed).fit_transform(image_features(images, sigma))


def expression_baselines(Xlog: np.ndarray, D: int, seed: int = 0) -> dict:
    from sklearn.decomposition import PCA, TruncatedSVD

    Z = (Xlog - Xlog.mean(0)) / (Xlog.std(0) + 1e-8)
    return {"expr_pca": PCA(n_components=D, random_state=seed).fit_transform(Z.T),
            "expr_svd": TruncatedSVD(n_components=D, random_state=seed).fit_transform(Xlog.T)}


def build_context(data: Path, dataset: str):
    """Load a data set and everything the measures need.

    Returns ``(adata, fit_kw, images, ctx)``: the AnnData, the fit keyword
    arguments, the default gene images and the scoring context (genes,
    symbols, families, detection rate, log mean, Moran's I, gene sets).
    """
    import sigel

    adata, fit_kw, human, fam_symbols, coords = load_dataset(data, dataset)
    log(f"{dataset}: {adata.n_obs} spots x {adata.n_vars} genes; load avg {os.getloadavg()}")
    images = sigel.GeneImages.from_anndata(adata, **fit_kw)
    genes = pd.Index(images.genes)
    X = sp.csc_matrix(adata[:, genes].X, dtype=np.float32)
    lib = (adata.obs[fit_kw["library_size_key"]].to_numpy(np.float64) if "library_size_key" in fit_kw
           else np.asarray(adata.X.sum(1)).ravel())
    Xlog = np.log1p((sp.diags((np.median(lib) / lib).astype(np.float32)) @ X).toarray())
    counts = X.toarray()
    ctx = {
        "genes": genes, "symbols": human.reindex(genes), "families": families(fam_symbols.reindex(genes)),
        "detection": (counts > 0).mean(0), "mean": np.log1p(counts.mean(0)), "moran": morans_i(Xlog, coords),
        "Xlog": Xlog,
    }
    del counts
    gs = read_gmt(data / "reference" / "gene_sets" / "human_GO_BP_propagated_10-500_symbols.gmt.gz")
    gs.update(read_gmt(data / "reference" / "gene_sets" / "h.all.v7.5.1.symbols.cleaned.gmt"))
    ctx["gene_sets"] = gs
    nfam = ctx["families"].nunique()
    log(f"{len(genes)} genes, {nfam} families (>= 5 members, {int(ctx['families'].notna().sum())} genes), "
        f"{len(gs)} gene sets")
    return adata, fit_kw, images, ctx


# ------------------------------------------------------------------ main
class _Records(list):
    """Scored records, each appended to the JSON-lines file ``path`` as soon as it exists (a long run
    that is stopped keeps what it measured)."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, rec):
        super().append(rec)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(rec, default=float) + "\n")


def parse_variant(text: str):
    """``NAME:KEY=VALUE,...`` -> (name, settings)."""
    name, _, rest = text.partition(":")
    return name, parse_settings(filter(None, rest.split(",")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data", help="shared data folder")
    ap.add_argument("--dataset", default="dlpfc151673")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                    help="a SIGEL fit to score ('default' = SIGEL()); repeatable")
    ap.add_argument("--embedding", action="append", default=[], metavar="NAME=FILE.csv",
                    help="a saved genes x dims table to score; repeatable")
    ap.add_argument("--no-baselines", action="store_true", help="score only the variants / embeddings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-embeddings", default=None, help="folder: write each variant's embeddings as CSV")
    ap.add_argument("--out", default=None, help="append the JSON records to this file")
    ap.add_argument("--kmeans-seeds", type=int, default=1,
                    help="average the pathway measures over this many k-means random states (less noise)")
    ap.add_argument("--trace-epochs", default="", metavar="E1,E2,...",
                    help="also score each variant's vectors after E epochs of training (0: the untrained encoder; "
                         "the trainer's per-epoch pass, one draw; rows '<name>@e<E>'): where the space gains "
                         "or loses structure")
    ap.add_argument("--reread", nargs="*", default=[], metavar="DRAWS",
                    help="also score each fitted variant re-embedded with these `draws` (a number or 'depth'; "
                         "`SIGEL.embed_images`; rows '<name>@d<DRAWS>')")
    ap.add_argument("--residualize", action="store_true",
                    help="also score every representation with detection rate and log mean regressed out "
                         "(rows '<name>_resid')")
    args = ap.parse_args(argv)

    import torch

    import sigel

    torch.set_num_threads(args.threads)
    sigel.settings.verbosity = 1
    adata, fit_kw, images, ctx = build_context(Path(args.data), args.dataset)
    ctx["kmeans_seeds"] = args.kmeans_seeds
    genes = ctx["genes"]
    trace = {int(e) for e in args.trace_epochs.split(",") if e.strip()}
    D = 32
    records = _Records(args.out)
    base = dict(dataset=args.dataset, n_genes=len(genes), seed=args.seed)

    def scored(name, E, **extra):
        records.append({**base, **score_all(name, E, ctx), **extra})
        if args.residualize:
            records.append({**base, **score_all(f"{name}_resid", residualize(E, ctx), ctx)})

    if not args.no_baselines:
        reps = expression_baselines(ctx["Xlog"], D, args.seed)
        reps["random"] = np.random.default_rng(args.seed).normal(size=(len(genes), D))
        reps["img_pca"] = image_pca(images, D, 0.0, args.seed)
        reps["img_pca_s2"] = image_pca(images, D, 2.0, args.seed)
        for name, E in reps.items():
            scored(name, E)
    for spec in args.embedding:
        name, _, path = spec.partition("=")
        E = pd.read_csv(path, index_col=0)
        E.index = E.index.astype(str)
        missing = genes.difference(E.index)
        if len(missing):
            log(f"{name}: {len(missing)} genes missing; scored on the genes it has is not comparable, skipping")
            continue
        scored(name, E.loc[genes].to_numpy(np.float64))
    for spec in args.variant:
        name, kw = parse_variant(spec)
        model = sigel.SIGEL(**kw)
        traced = {}
        if trace:
            # the trainer's per-epoch hook: the vectors every epoch's mixture and selection were computed from
            model._callback = lambda epoch, rec, Z, resp: traced.update(
                {epoch: Z.detach().cpu().numpy().astype(np.float64)} if epoch in trace else {})
        t0 = time.perf_counter()
        model.fit(adata, seed=args.seed, progress=False, n_threads=args.threads, **fit_kw)
        fit_s = time.perf_counter() - t0
        E = model.embeddings_.reindex(genes)
        if E.isna().any().any():
            raise SystemExit(f"variant {name}: the model did not embed every benchmark gene")
        if args.save_embeddings:
            Path(args.save_embeddings).mkdir(parents=True, exist_ok=True)
            E.to_csv(Path(args.save_embeddings) / f"{args.dataset}_{name}_seed{args.seed}.csv")
        extra = {"fit_s": fit_s, "peak_gb": peak_rss_gb(), "epochs_run": int(model.epochs_run_), "params": kw}
        h = model.history_
        for col in ("erank", "r2_detection"):
            if col in h:
                extra[f"history_{col}"] = [round(float(v), 4) for v in h[col]]
        scored(name, E.to_numpy(np.float64), **extra)
        rows = pd.Index(model.embeddings_.index).get_indexer(genes)
        for epoch, Z in sorted(traced.items()):
            scored(f"{name}@e{epoch}", Z[rows], epoch=epoch)
        im = model.images_for(adata, genes=genes) if args.reread else None  # imaged once for every re-read
        for d in args.reread:
            t0 = time.perf_counter()
            Z = model.embed_images(im, draws=d if d == "depth" else int(d))
            Z = pd.DataFrame(Z, index=im.genes).loc[genes].to_numpy(np.float64)
            scored(f"{name}@d{d}", Z, draws=d, embed_s=time.perf_counter() - t0)
    df = pd.DataFrame(list(records))
    cols = ["representation", "family", "family_shuffled", "path_k20", "path_k50", "path_k100", "r2_detection",
            "r2_mean", "r2_moran", "knn_detection", "erank", "mean_cos", "fit_s", "peak_gb"]
    print(markdown_table(df[[c for c in cols if c in df]]))
    return list(records)


if __name__ == "__main__":
    main()
