"""Experiment: how far one fit's gene space moves from epoch to epoch, next to how far two seeds differ.

Session 18 (issue 13, stability). Fits a model on one data set with the
trainer's per-epoch hook (the vectors every epoch's mixture is fitted to, one
depth-matched draw each) and saves them with the final vectors:

    .venv/bin/python benchmarks/exp_epoch_jitter.py --data ../shared/data --dataset dlpfc151673 \
        --seed 0 --hyper ema_decay=0 --out benchmarks/out/s18/jitter_73_old_s0.npz
    # the same with --seed 1, and without --hyper (the default weight average)

then, given two or more saved runs, prints the agreement (Pearson r of the
gene-gene cosines, :func:`bench_stability.cosine_agreement` on 3,000 random
genes) of consecutive epochs within a run, of each epoch with the final
vectors, and of two runs epoch by epoch and at the end:

    .venv/bin/python benchmarks/exp_epoch_jitter.py --compare benchmarks/out/s18/jitter_73_old_s0.npz \
        benchmarks/out/s18/jitter_73_old_s1.npz
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


def _agree(a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> float:
    from bench_stability import cosine_agreement

    return cosine_agreement(pd.DataFrame(a[idx]), pd.DataFrame(b[idx]))


def fit(args) -> None:
    import torch

    import sigel
    from bench_embeddings import build_context, parse_variant

    torch.set_num_threads(1)
    adata, fit_kw, _, ctx = build_context(Path(args.data), args.dataset)
    genes = ctx["genes"]
    _, kw = parse_variant("run:" + ",".join(args.hyper)) if args.hyper else ("run", {})
    model = sigel.SIGEL(**kw)
    traced = {}
    model._callback = lambda epoch, rec, Z, resp: traced.update({epoch: Z.detach().cpu().numpy().astype(np.float32)})
    t0 = time.perf_counter()
    model.fit(adata, seed=args.seed, progress=False, n_threads=1, **fit_kw)
    rows = pd.Index(model.embeddings_.index).get_indexer(genes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, genes=np.asarray(genes, dtype=str),
             final=model.embeddings_.reindex(genes).to_numpy(np.float32),
             label_change=model.history_["label_change"].to_numpy(float) if "label_change" in model.history_
             else np.array([]), **{f"e{e}": Z[rows] for e, Z in traced.items()})
    print(f"{args.dataset} seed {args.seed} {kw}: fit {time.perf_counter() - t0:.0f} s, {model.epochs_run_} epochs")


def compare(paths) -> None:
    runs = [np.load(p, allow_pickle=True) for p in paths]
    n = len(runs[0]["genes"])
    idx = np.random.default_rng(0).choice(n, min(n, 3000), replace=False)
    for p, d in zip(paths, runs):
        es = sorted(int(k[1:]) for k in d.files if k[0] == "e" and k[1:].isdigit())
        if "label_change" in d.files:
            print(f"{p}: label change per epoch {np.round(d['label_change'], 2).tolist()}")
        for e in es:
            nxt = _agree(d[f"e{e}"], d[f"e{e + 1}"], idx) if e + 1 in es else float("nan")
            print(f"  epoch {e}: r with the next {nxt:.3f}, with the final vectors {_agree(d[f'e{e}'], d['final'], idx):.3f}")
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            a, b = runs[i], runs[j]
            common = sorted(int(k[1:]) for k in a.files if k[0] == "e" and k[1:].isdigit() and k in b.files)
            per = ", ".join(f"{e}: {_agree(a[f'e{e}'], b[f'e{e}'], idx):.3f}" for e in common[-8:])
            print(f"{paths[i]} vs {paths[j]}: final {_agree(a['final'], b['final'], idx):.3f}; by epoch {per}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--dataset", default="dlpfc151673")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hyper", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="where to save the run (.npz)")
    ap.add_argument("--compare", nargs="+", default=None, metavar="RUN.npz")
    args = ap.parse_args(argv)
    if args.compare:
        compare(args.compare)
    elif args.out:
        fit(args)
    else:
        ap.error("give --out (fit and save a run) or --compare RUN.npz ...")


if __name__ == "__main__":
    main()
