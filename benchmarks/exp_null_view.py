"""Experiment (not in the library): a "null view" training term, tried and rejected in session 5.

Each training batch also embeds a spatially shuffled copy of every gene (its raw counts permuted
over the spots: the same marginal, no pattern), and the loss gains ``weight * tr Cov(z_null) /
tr Cov(z)``, the batch variance of the shuffled copies' vectors over that of the genes' own
(full-view) vectors: homogeneous images should land on one point, patterned ones spread. The
idea was to make "distance from homogeneity" in the vector space an SVG statistic. The term is
patched into the trainer here (single process) rather than added to the library, because it did
not work (benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/exp_null_view.py --data ../shared/data --weight 1 \
        --model-dir benchmarks/out/models/svg_mob_rep11_null1
    .venv/bin/python benchmarks/bench_svg.py --data ../shared/data --skip dlpfc --variance local \
        --metrics cosine whitened euclidean --mob-model benchmarks/out/models/svg_mob_rep11_null1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def null_batch(views, idx, generator=None, device=None):
    """Spatially shuffled images of genes ``idx`` (one random permutation of the spots per batch)."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    idx = np.asarray(idx)
    if not views._device_cache.get(str(dev)):
        views.batch(idx[:1], torch.ones(1), device=dev)  # fills the device cache
    cache = views._device_cache[str(dev)]
    C = torch.from_numpy(views.counts[idx].toarray()).to(dev)
    perm = torch.randperm(C.shape[1], generator=generator).to(dev)
    vals = C[:, perm] * cache["factor"][None, :]
    if views.log1p:
        vals = torch.log1p(vals)
    out = torch.zeros(len(idx), views.height * views.width, device=dev, dtype=torch.float32)
    out.index_add_(1, cache["pixel"], vals)
    out = out * cache["inv"][None, :]
    out = torch.minimum(out / cache["divisor"][torch.as_tensor(idx, device=dev)][:, None], torch.ones((), device=dev))
    v = out.reshape(len(idx), views.height, views.width)
    return torch.stack([v, cache["mask"].expand_as(v)], dim=1)


def patch_trainer(weight: float) -> None:
    """Add the null-view term to the (single-process) trainer of this process."""
    from sigel import _model
    from sigel.data.views import CountViews
    from sigel.train import trainer as T

    state = {}
    orig_views, orig_losses = T.training_views, T.refinement_losses

    def training_views(model, x, cfg, generator, full_view, *, views=None, idx=None, second=False, drawn=None):
        out, z, z2 = orig_views(model, x, cfg, generator, full_view, views=views, idx=idx, second=second,
                                drawn=drawn)
        state["z_null"] = None
        if views is not None and idx is not None and model.training:
            state["z_null"] = model.embed(null_batch(views, idx, generator, x.device).to(x.dtype))
        return out, z, z2

    def refinement_losses(recon, z, idx, st, z2=None, spread_batch=None):
        terms = orig_losses(recon, z, idx, st, z2, spread_batch)
        zn = state.pop("z_null", None)
        if zn is not None and z.shape[0] > 1:
            ratio = zn.float().var(0, unbiased=False).sum() / (z.var(0, unbiased=False).sum() + 1e-8)
            terms["null"] = ratio
            terms["total"] = terms["total"] + weight * ratio
        return terms

    T.uses_full_view = lambda cfg, weights: True
    T.training_views = training_views
    T.refinement_losses = refinement_losses
    _model.SIGEL._count_views = lambda self, adata, images: CountViews.from_anndata(adata, images)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", required=True, help="where the fitted MOB model is saved")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "python"))
    sys.path.insert(0, str(HERE))
    import sigel
    from bench_svg import load_mob

    patch_trainer(args.weight)
    adata, _ = load_mob(Path(args.data))
    t = time.perf_counter()
    model = sigel.SIGEL().fit(adata, seed=args.seed, n_threads=args.threads, geometry="grid", progress=False)
    print(f"fit {time.perf_counter() - t:.1f} s")
    print(model.history_[["epoch", "phase", "erank", "r2_detection", "null"]].to_string())
    model.save(args.model_dir, overwrite=True)


if __name__ == "__main__":
    main()
