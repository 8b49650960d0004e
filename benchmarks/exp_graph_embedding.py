"""Exploration: how good are neighbour-graph embeddings of the smoothed gene images?

Not a library feature. Scores, with bench_embeddings' measures, 32-d vectors
built without training an encoder from the kNN graph of the sigma-smoothed,
z-scored gene images (cosine on their top principal components):

* ``spectral``  Laplacian eigenmaps of the symmetrised kNN graph,
* ``nce``       a free (genes x 32) table fitted by InfoNCE with the graph's
                neighbours as positives and all genes as negatives (the
                loss of the SIGEL scaffold term, without an encoder).

    .venv/bin/python benchmarks/exp_graph_embedding.py --data ../shared/data --dataset dlpfc151673
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from bench_embeddings import (build_context, expression_baselines, image_features, log, markdown_table,  # noqa: E402
                             score_all)


def knn(P: np.ndarray, k: int):
    from sklearn.neighbors import NearestNeighbors

    U = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    d, ind = NearestNeighbors(n_neighbors=k + 1).fit(U).kneighbors(U)
    return ind[:, 1:], 1 - d[:, 1:] ** 2 / 2


def spectral(ind, sim, D, seed=0):
    import scipy.sparse as sp
    from sklearn.manifold import SpectralEmbedding

    G, k = ind.shape
    A = sp.csr_matrix((np.clip(sim.ravel(), 0, None), (np.repeat(np.arange(G), k), ind.ravel())), shape=(G, G))
    A = A.maximum(A.T)
    return SpectralEmbedding(D, affinity="precomputed", random_state=seed).fit_transform(A)


def nce(ind, sim, D, init, temperature=0.2, steps=600, seed=0, self_weight=0.0):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    Z = torch.tensor(init[:, :D], dtype=torch.float32)
    Z = (Z / Z.std()).requires_grad_(True)
    idx = torch.as_tensor(ind)
    w = torch.as_tensor(np.clip(sim, 0, None), dtype=torch.float32)
    opt = torch.optim.Adam([Z], lr=0.05)
    G = len(Z)
    for it in range(steps):
        b = torch.randint(0, G, (1024,))
        U = F.normalize(Z - Z.mean(0), dim=1)
        logp = torch.log_softmax(U[b] @ U.detach().T / temperature, dim=1)
        lp = torch.gather(logp, 1, idx[b])
        num = (w[b] * lp).sum(1) + self_weight * logp[torch.arange(len(b)), b]
        loss = -(num / (w[b].sum(1) + self_weight).clamp(min=1e-6)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Z.detach().numpy()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--dataset", default="dlpfc151673")
    ap.add_argument("--sigma", type=float, default=2.0)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--npc", type=int, default=50)
    ap.add_argument("--embedding", action="append", default=[])
    ap.add_argument("--no-spectral", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from sklearn.decomposition import PCA

    adata, fit_kw, images, ctx = build_context(Path(args.data), args.dataset)
    genes = ctx["genes"]
    recs = []
    reps = {"expr_pca": expression_baselines(ctx["Xlog"], 32)["expr_pca"]}
    t0 = time.perf_counter()
    Fs = image_features(images, args.sigma)
    P = PCA(n_components=max(args.npc, 32), random_state=0).fit_transform(Fs)
    del Fs
    reps[f"img_pca_s{args.sigma:g}"] = P[:, :32]
    ind, sim = knn(P[:, :args.npc], args.k)
    log(f"features + graph {time.perf_counter() - t0:.1f} s")
    if not args.no_spectral:  # ARPACK can take many minutes on a graph with many components
        reps["spectral"] = spectral(ind, sim, 32)
    reps["nce"] = nce(ind, sim, 32, P)
    reps["nce_self1"] = nce(ind, sim, 32, P, self_weight=1.0)
    for spec in args.embedding:
        name, _, path = spec.partition("=")
        E = pd.read_csv(path, index_col=0)
        E.index = E.index.astype(str)
        reps[name] = E.loc[genes].to_numpy(np.float64)
    for name, E in reps.items():
        recs.append({"dataset": args.dataset, **score_all(name, E, ctx)})
    df = pd.DataFrame(recs)
    print(markdown_table(df[["representation", "path_k20", "path_k50", "path_k100", "r2_detection", "r2_mean",
                             "r2_moran", "erank"]]))
    if args.out:
        df.to_json(args.out, orient="records", lines=True)


if __name__ == "__main__":
    main()
