"""Stability of the gene space: two seeds, and one process vs two (torchrun, gloo).

Agreement of two fits = Pearson r of their gene-gene cosine similarities (all
pairs of centred vectors; the two spaces need not be aligned). Reported:
seed 0 vs seed 1 (one process each) and, with ``--torchrun``, seed 0 in one
process vs seed 0 in two processes.

    .venv/bin/python benchmarks/bench_stability.py --dataset synthetic600 [--torchrun] \\
        [--variant NAME:KEY=VALUE,...]
    .venv/bin/python benchmarks/bench_stability.py --data ../shared/data --dataset dlpfc151673
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))


def log(msg):
    print(f"[bench_stability] {msg}", file=sys.stderr, flush=True)


def cosine_agreement(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Pearson r of the pairwise centred-cosine similarities of the genes both tables hold."""
    genes = a.index.intersection(b.index)

    def sims(E):
        Z = E.loc[genes].to_numpy(np.float64)
        Z = Z - Z.mean(0)
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        S = Z @ Z.T
        return S[np.triu_indices(len(genes), 1)]

    return float(np.corrcoef(sims(a), sims(b))[0, 1])


def load(args):
    import sigel

    if args.dataset.startswith("synthetic"):
        n = int(args.dataset[len("synthetic"):] or 600)
        return sigel.datasets.synthetic_tissue(n, seed=0), {}
    from bench_embeddings import load_dataset

    adata, kw, *_ = load_dataset(Path(args.data), args.dataset)
    return adata, kw


WORKER = r'''
import json, sys
sys.path.insert(0, {py!r})
import anndata as ad, sigel
adata = ad.read_h5ad({h5ad!r})
m = sigel.SIGEL(**json.loads({params!r})).fit(adata, seed=0, progress=False, n_threads=1, **json.loads({fit!r}))
import torch.distributed as dist
if not dist.is_initialized() or dist.get_rank() == 0:
    m.embeddings_.to_csv({out!r})
'''


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--dataset", default="synthetic600")
    ap.add_argument("--variant", default="default", metavar="NAME[:KEY=VALUE,...]")
    ap.add_argument("--torchrun", action="store_true", help="also fit seed 0 in two processes (gloo)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the JSON record to this file")
    args = ap.parse_args(argv)

    import torch

    import sigel
    from bench_embeddings import parse_variant

    torch.set_num_threads(args.threads)
    name, params = parse_variant(args.variant)
    adata, fit_kw = load(args)
    emb, secs = {}, {}
    for seed in (0, 1):
        t0 = time.perf_counter()
        m = sigel.SIGEL(**params).fit(adata, seed=seed, progress=False, n_threads=args.threads, **fit_kw)
        secs[f"seed{seed}"] = time.perf_counter() - t0
        emb[seed] = m.embeddings_
        log(f"seed {seed}: {secs[f'seed{seed}']:.0f} s")
    rec = {"dataset": args.dataset, "variant": name, "params": params, "n_genes": len(emb[0]),
           "r_seed0_seed1": cosine_agreement(emb[0], emb[1]), "seconds": secs,
           "load_average": os.getloadavg()}
    if args.torchrun:
        with tempfile.TemporaryDirectory() as tmp:
            h5 = str(Path(tmp) / "data.h5ad")
            adata.write_h5ad(h5)
            out = str(Path(tmp) / "emb.csv")
            script = Path(tmp) / "worker.py"
            script.write_text(WORKER.format(py=str(HERE.parent / "python"), h5ad=h5, params=json.dumps(params),
                                            fit=json.dumps(fit_kw), out=out))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--master_addr", "127.0.0.1", "--master_port", "29533", str(script)], check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            secs["torchrun2_seed0"] = time.perf_counter() - t0
            two = pd.read_csv(out, index_col=0)
            two.index = two.index.astype(str)
            rec["r_1proc_2proc"] = cosine_agreement(emb[0], two)
    print(json.dumps(rec, default=float))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec, default=float) + "\n")
    return rec


if __name__ == "__main__":
    main()
