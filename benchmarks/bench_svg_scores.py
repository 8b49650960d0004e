"""Which SVG score can the gene vectors support? Score variants on one set of embeddings.

`sigel.tl.svg` scores a gene by the distance of its vector from its own
simulated homogeneous controls, in units of the controls' spread. This
diagnostic embeds the real MOB genes and ``--n-null + 1`` controls per gene
once (the library's control draws, ``--null``) and ranks the genes with
several scores built from the *same* vectors, each against the published
SpatialDE calls (AUPRC; random = the fraction of reference genes):

* ``cosine`` / ``euclidean`` / ``whitened``: the library's metrics
  (`sigel.tasks.svg.svg_scores`), ranked by score and by -log10 p;
* ``centred cosine``: cosine after removing the mean gene vector;
* ``gene-whitened``: Euclidean distance after whitening by the covariance of
  the real genes' vectors;
* ``discriminant``: a linear discriminant between real genes and controls,
  cross-fitted on two halves of the genes (each half scored by the model
  fitted on the other half); raw discriminant value and its z-score among
  the gene's own controls;
* ``pooled kNN``: mean distance to the 5 nearest controls of all genes of the
  same expression bin (quantile bins of the mean count);
* ``pixels``: the library's score computed on the encoder's *input* (the
  filtered, standardised images over the tissue pixels) instead of the
  vectors, i.e. what the distance-to-controls idea gives without the encoder;
* baselines: the mean count alone, and Moran's I (`sigel.tl.morans_i`).

    .venv/bin/python benchmarks/bench_svg_scores.py --data ../shared/data \
        --model benchmarks/out/models/svg_mob_rep11 [--null zinb] [--variance local] [--out FILE.json]

The model directory is fitted by ``benchmarks/bench_svg.py`` (default
`SIGEL()` on MOB replicate 11) and must exist.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def embed_real_and_controls(sigel, model, adata, *, n_null: int, null: str, seed: int, pixels: bool,
                            variance: str = "local"):
    """Real vectors ``(G, D)``, control vectors ``(G, n_null + 1, D)``, log mean count, genes; optionally the
    encoder-input pixels of both (``(G, P)`` and ``(G, n_null + 1, P)``)."""
    import torch

    from sigel.tasks import svg as svg_task
    from sigel.tasks._model import model_image_options

    opts = model_image_options(model, None)
    images = svg_task.real_images(model, adata, adata.var_names, opts)
    genes = images.genes
    R = model.embed_images(images)
    draws = svg_task._ControlDraws(adata, genes, opts, null=null, depth_aware=True, seed=seed, variance=variance)
    n1 = n_null + 1
    C = np.empty((len(genes), n1, R.shape[1]), np.float32)
    mask = images.mask.ravel()

    def encoder_input(im, idx):
        with torch.inference_mode():
            v = model.module_.normalize_input(im.to_tensor(idx))
        v = v[:, 0] if v.ndim == 4 else v
        return v.reshape(len(idx), -1)[:, mask].numpy()

    XR = XC = None
    if pixels:
        XR = np.concatenate([encoder_input(images, np.arange(s, min(s + 1024, len(genes))))
                             for s in range(0, len(genes), 1024)])
        XC = np.empty((len(genes), n1, XR.shape[1]), np.float32)
    for s in range(0, len(genes), 256):
        e = min(s + 256, len(genes))
        ci = draws.images(s, e, n1)
        C[s:e] = model.embed_images(ci).reshape(e - s, n1, -1)
        if pixels:
            XC[s:e] = encoder_input(ci, np.arange(ci.n_genes)).reshape(e - s, n1, -1)
    return R, C, np.log1p(draws.mean_count), genes, XR, XC


def expression_bins(level: np.ndarray, n_bins: int = 10) -> np.ndarray:
    import pandas as pd

    ranks = pd.Series(level).rank(method="first").to_numpy() - 1
    return np.minimum((ranks * n_bins / len(level)).astype(np.int64), n_bins - 1)


def discriminant(R, C, seed: int = 0):
    """Cross-fitted linear discriminant (real vs controls): raw value of each gene, and its z among its controls."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    G, n1, D = C.shape
    fold = np.random.default_rng(seed).integers(0, 2, G)
    sR, sC = np.empty(G), np.empty((G, n1))
    for k in (0, 1):
        tr, te = fold != k, fold == k
        X = np.concatenate([R[tr], C[tr].reshape(-1, D)])
        y = np.r_[np.ones(tr.sum()), np.zeros(tr.sum() * n1)]
        lda = LinearDiscriminantAnalysis().fit(X, y)
        sR[te] = lda.decision_function(R[te])
        sC[te] = lda.decision_function(C[te].reshape(-1, D)).reshape(-1, n1)
    z = (sR - sC[:, 1:].mean(1)) / (sC[:, 1:].std(1) + 1e-12)
    return sR, z


def pooled_knn(R, C, bins, k: int = 5):
    """Mean distance of each gene's vector to the ``k`` nearest controls of all genes in its expression bin."""
    from sklearn.neighbors import NearestNeighbors

    out = np.empty(len(R))
    D = R.shape[1]
    for b in np.unique(bins):
        sel = np.flatnonzero(bins == b)
        nn = NearestNeighbors(n_neighbors=k).fit(C[sel].reshape(-1, D))
        out[sel] = nn.kneighbors(R[sel])[0].mean(1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--model", default=str(HERE / "out" / "models" / "svg_mob_rep11"))
    ap.add_argument("--null", default="zinb", choices=["zinb", "permutation"])
    ap.add_argument("--variance", default="local", choices=["local", "marginal"],
                    help="variance the ZINB controls are fitted to (tl.svg(variance=...))")
    ap.add_argument("--n-null", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-pixels", action="store_true", help="skip the encoder-input (pixel) score")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "python"))
    sys.path.insert(0, str(HERE))
    import torch
    from sklearn.metrics import average_precision_score

    import sigel
    from bench_svg import load_mob
    from sigel.tasks.svg import svg_scores

    torch.set_num_threads(args.threads)
    if not (Path(args.model) / "config.json").exists():
        sys.exit(f"no model at {args.model}: fit one with benchmarks/bench_svg.py first")
    t0 = time.perf_counter()
    adata, truth = load_mob(Path(args.data))
    model = sigel.SIGEL.load(args.model)
    R, C, level, genes, XR, XC = embed_real_and_controls(sigel, model, adata, n_null=args.n_null, null=args.null,
                                                         seed=args.seed, pixels=not args.no_pixels,
                                                         variance=args.variance)
    y = truth.reindex(genes).fillna(False).to_numpy().astype(int)
    R64, C64 = R.astype(np.float64), C.astype(np.float64)
    bins = expression_bins(level)
    rows = {}

    def auprc(s):
        return round(float(average_precision_score(y, np.nan_to_num(s, nan=-np.inf))), 3)

    def lib(name, Rv, Cv, metric):
        t = svg_scores(Rv, Cv, level, metric=metric, index=np.arange(len(Rv))).sort_index()
        rows[name] = dict(auprc_score=auprc(t["score"].to_numpy()), auprc_logp=auprc(-np.log10(t["pval"].to_numpy())),
                          n_q05=int((t["qval"] < 0.05).sum()))

    for metric in ("cosine", "euclidean", "whitened"):
        lib(metric, R64, C64, metric)
    mu = R64.mean(0)
    lib("centred cosine", R64 - mu, C64 - mu, "cosine")
    _, sv, vt = np.linalg.svd(R64 - mu, full_matrices=False)
    W = vt.T / np.maximum(sv, 1e-12) * np.sqrt(len(R64))
    lib("gene-whitened euclidean", (R64 - mu) @ W, (C64 - mu) @ W, "euclidean")
    raw, z = discriminant(R64, C64, args.seed)
    rows["discriminant (raw value)"] = dict(auprc_score=auprc(raw))
    rows["discriminant (z among own controls)"] = dict(auprc_score=auprc(z))
    rows["pooled kNN (5 nearest controls of the bin)"] = dict(auprc_score=auprc(pooled_knn(R64, C64, bins)))
    if XR is not None:
        lib("pixels (encoder input), euclidean", XR.astype(np.float64), XC.astype(np.float64), "euclidean")
    rows["mean count alone"] = dict(auprc_score=auprc(level))
    mi = sigel.tl.morans_i(adata, genes=genes)
    rows["Moran's I"] = dict(auprc_score=auprc(mi["I"].reindex(genes).to_numpy()))
    res = dict(model=args.model, null=args.null, variance=args.variance, n_null=args.n_null, genes=len(genes), reference=int(y.sum()),
               random_auprc=round(float(y.mean()), 4), seconds=round(time.perf_counter() - t0, 1), scores=rows)
    print(json.dumps(res, indent=1))
    lines = ["| score | AUPRC (by score) | AUPRC (by -log10 p) | genes at q < 0.05 |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['auprc_score']} | {r.get('auprc_logp', '')} | {r.get('n_q05', '')} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
