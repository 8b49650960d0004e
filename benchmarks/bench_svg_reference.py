"""What a gene's own homogeneous controls measure: the gene, or their own noise? (`tl.svg(reference=...)`)

On the olfactory bulb (replicate 11, the genes SpatialDE tested), every gene gets 12 homogeneous
controls (the default ZINB null, the default draws), embedded once per model. Then:

1. *Are controls gene-specific beyond the expression level?* The controls are split into two
   halves of 6. For each half, a gene's control mean and spread are detrended by the running mean /
   median over the 101 genes nearest in level, and the two halves are correlated. Near 0: what a
   gene's own controls say beyond its level is their own sampling noise.
2. *AUPRC against the published SpatialDE calls* of ``reference='gene'`` (6 controls + 1 for the
   null, the Session 13 default) and ``reference='level'`` with 1, 2 and 6 controls per gene.
3. *Stability to the control draws*: the same scores from the first and the second half of the
   controls (Spearman), and, with two models, between the refits.

    .venv/bin/python benchmarks/bench_svg_reference.py --data ../shared/data \\
        --mob-model benchmarks/out/models/mob_rare_seed0 --mob-model benchmarks/out/models/mob_rare_seed1
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

def detrended(values: np.ndarray, level: np.ndarray, stat) -> np.ndarray:
    """``values`` (G, ...) minus ``stat`` over the genes nearest in level (the library's windows)."""
    from sigel.tasks.svg import LEVEL_WINDOW, _level_windows

    G = len(level)
    start, order = _level_windows(level, G, LEVEL_WINDOW)
    win = np.lib.stride_tricks.sliding_window_view(values[order], LEVEL_WINDOW, axis=0)  # (G - W + 1, ..., W)
    return values - stat(win, axis=-1)[start]


def halves_agreement(C: np.ndarray, level: np.ndarray) -> dict:
    """Correlation between the two halves' level-detrended control means and log spreads, by level tercile."""
    n = C.shape[1] // 2
    parts = [C[:, :n], C[:, n:2 * n]]
    means = [p.mean(1) for p in parts]
    spreads = [np.log(np.maximum(((p - m[:, None]) ** 2).sum(-1).mean(1), 1e-12)) for p, m in zip(parts, means)]
    dm = [detrended(m, level, np.mean) for m in means]
    ds = [detrended(s, level, np.median) for s in spreads]
    cuts = np.quantile(level, [0, 1 / 3, 2 / 3, 1])
    out = {}
    for i in range(3):
        sel = (level >= cuts[i]) & (level <= cuts[i + 1])
        out[f"level tercile {i + 1}"] = dict(
            genes=int(sel.sum()),
            mean_r=round(float(np.corrcoef(dm[0][sel].ravel(), dm[1][sel].ravel())[0, 1]), 3),
            log_spread_r=round(float(np.corrcoef(ds[0][sel], ds[1][sel])[0, 1]), 3))
    return out


def variants(real, C, level) -> dict:
    """Scores of each reference variant, from the first half of the controls ('a') and from the second ('b')."""
    from sigel.tasks.svg import svg_scores

    n = C.shape[1] // 2
    halves = {"a": C[:, :n], "b": C[:, n:2 * n]}
    other = {"a": C[:, n:n + 1], "b": C[:, :1]}  # one control of the other half: the 'gene' null's extra one
    idx = np.arange(len(real))
    out = {}
    for h, Ch in halves.items():
        def score(controls, **kw):
            return svg_scores(real, controls, level, index=idx, **kw).sort_index()["score"].to_numpy()

        out[("gene, 6 controls + 1", h)] = score(np.concatenate([other[h], Ch], 1), reference="gene")
        for k in (1, 2, 6):
            out[(f"level, {k} controls", h)] = score(Ch[:, :k], reference="level")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--mob-model", action="append", required=True, help="a fitted bulb model; repeat for refits")
    ap.add_argument("--n-controls", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the JSON results here")
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score

    import sigel
    from bench_svg import load_mob
    from sigel.tasks.svg import embed_with_controls

    torch.set_num_threads(args.threads)
    adata, truth = load_mob(Path(args.data))
    res, scores = {}, []
    for path in args.mob_model:
        model = sigel.SIGEL.load(path)
        genes, real, C, mean = embed_with_controls(model, adata, None, args.n_controls, progress=False)
        level = np.log1p(mean)
        Cn = C / np.linalg.norm(C, axis=-1, keepdims=True)
        y = truth.reindex(genes).fillna(False).to_numpy()
        v = variants(real, C, level)
        scores.append(v)
        names = sorted({k for k, _ in v})
        res[path] = dict(
            genes=len(genes),
            halves_agreement=halves_agreement(Cn, level),
            auprc={k: [round(float(average_precision_score(y, v[(k, h)])), 3) for h in "ab"] for k in names},
            control_halves_spearman={k: round(float(spearmanr(v[(k, "a")], v[(k, "b")])[0]), 3) for k in names},
        )
        print(json.dumps({path: res[path]}, indent=1), flush=True)
    if len(scores) == 2:
        res["refits_spearman"] = {k: round(float(spearmanr(scores[0][(k, "a")], scores[1][(k, "a")])[0]), 3)
                                  for k, h in scores[0] if h == "a"}
        print(json.dumps({"refits_spearman": res["refits_spearman"]}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
