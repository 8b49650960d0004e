"""Tried and rejected (issue 18): train on depth-matched draws at a random depth, then read SVG deeper.

Patches the draws the (single-process) trainer reads: each gene's draw keeps
its counts at a depth drawn log-uniformly in ``[T, K x T]`` (``--K 8``) or,
with ``--K -1``, between ``T`` and the gene's own total, instead of at ``T``.
After the fit the draws are the library's again, and ``sigel.tl.svg``
(ZINB local null, cosine, 10 controls, 4 draws) reads the bulb at ``--depths``
multiples of ``T`` (1000 = every gene whole). AUPRC against the published
SpatialDE calls.

    .venv/bin/python benchmarks/exp_depth_ladder.py --data ../shared/data --K 8 --depths 1 2 4 8 1000 \
        --model benchmarks/out/models/mob_ladder8_seed0 --out benchmarks/out/s13/ladder8
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_svg as B  # noqa: E402
import sigel  # noqa: E402
from bench_fit_dlpfc import parse_settings  # noqa: E402
from sigel.data import views as V  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
ap.add_argument("--K", type=float, default=8.0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", required=True)
ap.add_argument("--depths", type=float, nargs="+", default=[1, 4])
ap.add_argument("--draws", type=int, nargs="+", default=[4])
ap.add_argument("--n-null", type=int, default=10)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--model", default=None)
ap.add_argument("--hyper", nargs="*", default=[])
a = ap.parse_args()
torch.set_num_threads(a.threads)
STATE = {"train": True}
orig = V.RarefiedImages.dense
def dense(self, idx):
    if not STATE["train"] or a.K <= 1:
        return orig(self, idx)
    idx = np.asarray(idx, dtype=np.int64)
    u = torch.rand(len(idx), generator=self.generator)
    if a.K < 0:  # full ladder: depth log-uniform between T and the gene's total
        keep = self._keep[idx] ** u
    else:
        f = torch.exp(u * float(np.log(a.K)))
        keep = torch.clamp(self._keep[idx] * f, max=1.0)
    return self._views.rarefied(idx, keep, generator=self.generator).reshape(len(idx), self.height, self.width)
V.RarefiedImages.dense = dense
adata, truth = B.load_mob(Path(a.data))
hyper = parse_settings(a.hyper)  # the benchmarks' KEY=VALUE reader (JSON values, else text)
t = time.time()
if a.model and Path(a.model, "config.json").exists():
    model = sigel.SIGEL.load(a.model)
else:
    model = sigel.SIGEL(**hyper).fit(adata, seed=a.seed, n_threads=a.threads, geometry="grid")
    if a.model:
        model.save(a.model, overwrite=True)
fit_s = time.time() - t
STATE["train"] = False
T = model.image_options_["rarefy"]
res = dict(K=a.K, seed=a.seed, fit_s=fit_s, T=T, hyper=hyper, svg={})
for d in a.depths:
    for dr in a.draws:
        t = time.time()
        opts = None if d == 1 else {"rarefy": int(T * d)}
        sg = sigel.tl.svg(model, adata, n_null=a.n_null, image_options=opts, seed=0, metric="cosine", null="zinb",
                          variance="local", draws=dr, progress=False)
        y = truth.reindex(sg.index).fillna(False).to_numpy()
        res["svg"][f"d{d}_n{dr}"] = dict(auprc=round(float(average_precision_score(y, sg["score"])), 4), s=round(time.time() - t, 1))
        sg.to_csv(f"{a.out}_d{d}_n{dr}.csv")
        print(res["svg"], flush=True)
json.dump(res, open(a.out + ".json", "w"), indent=1)
print(json.dumps(res))
