"""Benchmark: imputing genes missing from a targeted panel (issue 8).

Scenario 1 -- Visium, adjacent DLPFC sections (Maynard et al. 2021):
reference = 151673 (full coverage; a SIGEL model is fitted on it, or loaded
with ``--model DIR``); target = 151675 (``--sections REF TGT`` swaps or
changes the pair) restricted to a panel of ``--n-panel`` genes. Panel rule
(documented, deterministic): among genes embedded by the model and detected
(> 0) in at least 10% of the target's spots, the top ``--n-panel`` by
Moran's I in the target (log-normalised by ``sum_umi``, binary
hexagonal 6-neighbour weights on the Visium array). Evaluation genes:
``--n-eval`` genes drawn at random (seed 0) from the remaining eligible
genes. Each method imputes them from the panel and is scored against their
real maps in the target (values on the target image scale: normalised by
``sum_umi``, log1p, divided by the gene's 0.99 quantile, clipped) with the
Li et al. 2022 metrics (median over genes) and the accuracy score (AS).
Methods: SIGEL-GAN, SIGEL-kNN, the mean panel image, and Tangram
(``tangram-sc``, benchmark-only dependency: maps the reference spots onto the
target spots using the panel genes, then projects the evaluation genes).

Scenario 2 -- imaging geometry (free coordinates, rasterised): Molecular
Cartography mouse cortex. A model is fitted on section A1 (100 genes);
target = section B1 restricted to a random half of the genes (seed 0); the
other half is imputed and scored. Then osmFISH (Codeluppi 2018) as a target
of the same A1 model: ``impute_cv`` (5-fold) over the genes both measure.

Usage::

    PYTHONPATH=python .venv/bin/python benchmarks/bench_impute.py --data ../shared/data \
        [--model DIR] [--save-model DIR] [--n-genes 2000] [--epochs 20] [--threads 2] \
        [--n-steps 600] [--fish-steps 300] [--skip-tangram] [--skip-fish] [--json out.json] \
        [--sections 151675 151673] [--seed 1] [--gan-variant NAME:KEY=VALUE,...]

Prints a markdown section and (with ``--json``) writes all numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

import sigel  # noqa: E402
from sigel.tasks.impute import impute, impute_cv, impute_metrics, impute_summary  # noqa: E402
from bench_fit_dlpfc import parse_settings  # noqa: E402


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ helpers
def lognorm(adata, lib):
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    f = np.median(lib) / lib
    X = sp.csr_matrix(sp.diags(f) @ X)
    X.data = np.log1p(X.data)
    return X


def visium_weights(adata):
    """Binary hexagonal neighbour weights from Visium array coordinates (spots x spots, sparse)."""
    r = adata.obs["array_row"].to_numpy(int)
    c = adata.obs["array_col"].to_numpy(int)
    key = pd.Series(np.arange(len(r)), index=pd.MultiIndex.from_arrays([r, c]))
    rows, cols = [], []
    for dr, dc in ((0, 2), (0, -2), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        idx = key.reindex(pd.MultiIndex.from_arrays([r + dr, c + dc])).to_numpy()
        ok = ~np.isnan(idx)
        rows.append(np.flatnonzero(ok))
        cols.append(idx[ok].astype(int))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(r), len(r)))


def morans_i(X, W):
    """Moran's I of every column of X (spots x genes, sparse/dense) under weights W."""
    Z = np.asarray(X.todense() if sp.issparse(X) else X, dtype=np.float64)
    Z = Z - Z.mean(0)
    num = (Z * (W @ Z)).sum(0)
    den = (Z**2).sum(0)
    n, s0 = Z.shape[0], W.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / s0 * num / den


def truth_frame(adata, genes, norm_settings, library_size_key):
    im = sigel.GeneImages.from_anndata(adata, genes=list(genes), library_size_key=library_size_key, patch_size=1,
                                       min_spots=0, exclude_prefixes=(), **norm_settings)
    return pd.DataFrame(im.spot_values(list(genes)).T.toarray(), index=im.spot_names, columns=list(genes))


def norm_settings_of(model):
    src = model.images_.settings if getattr(model, "images_", None) is not None else model.image_options_
    return {k: src[k] for k in ("normalize", "log1p", "scale", "scale_quantile") if k in src}


def frame_of(out, genes):
    return pd.DataFrame(out[:, list(genes)].X, index=out.obs_names, columns=list(genes))


def run_tangram(ref, tgt_panel, panel, genes, lib_ref, lib_tgt, seed=0, epochs=1000):
    import anndata as ad
    import tangram as tg

    keep = list(dict.fromkeys(list(panel) + list(genes)))
    sc_ = ad.AnnData(X=lognorm(ref[:, keep], lib_ref).astype(np.float32), obs=pd.DataFrame(index=ref.obs_names),
                     var=pd.DataFrame(index=keep))
    sp_ = ad.AnnData(X=lognorm(tgt_panel, lib_tgt).astype(np.float32), obs=pd.DataFrame(index=tgt_panel.obs_names),
                     var=pd.DataFrame(index=tgt_panel.var_names))
    tg.pp_adatas(sc_, sp_, genes=list(panel))
    amap = tg.map_cells_to_space(sc_, sp_, mode="cells", device="cpu", num_epochs=epochs, random_state=seed,
                                 verbose=False)
    ge = tg.project_genes(amap, sc_)
    low = {g.lower(): g for g in genes}
    X = ge[:, [g.lower() for g in genes]].X
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    return pd.DataFrame(X, index=tgt_panel.obs_names, columns=[low[g.lower()] for g in genes])


def md_table(summ, seconds):
    lines = ["| method | median PCC | median SSIM | median RMSE | median JS | AS | seconds |",
             "|---|---|---|---|---|---|---|"]
    for m, r in summ.iterrows():
        lines.append(f"| {m} | {r.PCC:.3f} | {r.SSIM:.3f} | {r.RMSE:.3f} | {r.JS:.4f} | {r.AS:.2f} | "
                     f"{seconds.get(m, float('nan')):.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- scenario 1
def dlpfc(args, results):
    import anndata as ad

    d = Path(args.data) / "dlpfc"
    ref_id, tgt_id = args.sections
    ref = ad.read_h5ad(d / f"dlpfc_{ref_id}_counts.h5ad")
    tgt = ad.read_h5ad(d / f"dlpfc_{tgt_id}_counts.h5ad")
    ref.var_names_make_unique()
    tgt.var_names_make_unique()
    log(f"reference {ref.shape}, target {tgt.shape}")
    t0 = time.perf_counter()
    if args.model:
        model = sigel.SIGEL.load(args.model)
        log(f"loaded model {model}")
        fit_s = None
    else:
        det = np.asarray((ref.X > 0).sum(0)).ravel()
        common = ref.var_names.isin(tgt.var_names)
        order = np.argsort(-(det * common))
        genes = ref.var_names[order[: args.n_genes]]
        hyper = parse_settings(args.hyper)
        model = sigel.SIGEL(epochs=args.epochs, **hyper)
        log(f"fitting SIGEL on {len(genes)} genes of {ref_id} ({args.epochs} epochs; {hyper or 'defaults'})")
        model.fit(ref, genes=genes, library_size_key="sum_umi", seed=0, n_threads=args.threads, progress=False)
        fit_s = time.perf_counter() - t0
        log(f"fitted in {fit_s:.0f}s: {model}")
        if args.save_model:
            model.save(args.save_model, overwrite=True)
    opts = dict(model.image_options_)
    opts["library_size_key"] = "sum_umi"
    opts["genes"] = list(model.embeddings_.index)
    for k in ("layer", "spatial_key"):
        opts.pop(k, None)
    ref_images = sigel.GeneImages.from_anndata(ref, **opts)
    norm = norm_settings_of(model)

    # ---- panel and evaluation genes ----
    emb_genes = pd.Index(model.embeddings_.index)
    in_tgt = emb_genes[emb_genes.isin(tgt.var_names)]
    det_t = pd.Series(np.asarray((tgt[:, in_tgt].X > 0).mean(0)).ravel(), index=in_tgt)
    eligible = det_t.index[det_t >= 0.10]
    lib_t = tgt.obs["sum_umi"].to_numpy(np.float64)
    W = visium_weights(tgt)
    mi = pd.Series(morans_i(lognorm(tgt[:, eligible], lib_t), W), index=eligible).sort_values(ascending=False)
    panel = mi.index[: args.n_panel]
    rest = mi.index[args.n_panel:]
    rng = np.random.default_rng(0)
    evalg = pd.Index(rng.choice(rest, size=min(args.n_eval, len(rest)), replace=False))
    log(f"panel {len(panel)} genes (Moran's I {mi.iloc[args.n_panel - 1]:.3f}..{mi.iloc[0]:.3f}); "
        f"eval {len(evalg)} genes (median Moran's I {mi[evalg].median():.3f})")
    tgt_panel = tgt[:, panel].copy()
    truth = truth_frame(tgt, evalg, norm, "sum_umi")

    preds, secs, confs = {}, {}, {}
    for name, meth, kw in gan_runs(args):
        t = time.perf_counter()
        out = impute(model, tgt_panel, genes=list(evalg), method=meth, library_size_key="sum_umi",
                     seed=args.seed, n_threads=args.threads, reference_images=ref_images, n_steps=args.n_steps,
                     progress=False, **kw)
        secs[name] = time.perf_counter() - t
        preds[name] = frame_of(out, evalg)
        confs[name] = out.var.loc[list(evalg), "confidence"]
        log(f"{name}: {secs[name]:.1f}s")
    if not args.skip_tangram:
        try:
            t = time.perf_counter()
            preds["tangram"] = run_tangram(ref, tgt_panel, panel, evalg, ref.obs["sum_umi"].to_numpy(float), lib_t)
            secs["tangram"] = time.perf_counter() - t
            log(f"tangram: {secs['tangram']:.1f}s")
        except Exception as e:  # report, keep going
            log(f"tangram failed: {type(e).__name__}: {e}")
            results["tangram_error"] = f"{type(e).__name__}: {e}"
    met = impute_metrics(truth, preds)
    summ = impute_summary(met)
    from scipy.stats import spearmanr

    gm = met[met.method == "gan"]
    rho = spearmanr(confs["gan"].reindex(gm.index), gm.PCC).statistic
    hi = mi[evalg] >= mi[evalg].median()
    sv = impute_summary(met[met.index.isin(evalg[hi.to_numpy()])])
    results["dlpfc"] = dict(
        sections=[ref_id, tgt_id], n_model_genes=int(len(emb_genes)), n_panel=int(len(panel)),
        n_eval=int(len(evalg)), fit_seconds=fit_s,
        summary=summ.reset_index().to_dict(orient="records"), seconds=secs,
        summary_spatial_half=sv.reset_index().to_dict(orient="records"),
        confidence_spearman_gan=float(rho), model=repr(model),
    )
    md = [f"### Imputation: DLPFC {ref_id} -> {tgt_id} panel",
          f"Model: {model!r}" + (f" (fitted in {fit_s:.0f}s)" if fit_s else " (loaded)"),
          f"Panel: top {len(panel)} Moran's I genes of {tgt_id} among embedded genes detected in >=10% of spots; "
          f"{len(evalg)} random other eligible genes imputed and scored against their {tgt_id} maps.", "",
          md_table(summ, secs), "",
          "More spatially structured half of the evaluation genes (Moran's I >= median):", "",
          md_table(sv, {}), "",
          f"Spearman(confidence, PCC) for the GAN over the {len(evalg)} genes: {rho:.3f}"]
    return "\n".join(md)


def gan_runs(args):
    """(name, method, options) of every run: the three methods, then each ``--gan-variant`` as ``gan_NAME``."""
    return [(m, m, {}) for m in ("gan", "knn", "mean")] + [("gan_" + n, "gan", kw) for n, kw in args.gan_variant]


# ---------------------------------------------------------------- scenario 2
def fish(args, results):
    import anndata as ad

    d = Path(args.data) / "fish"
    a1 = ad.read_h5ad(d / "molecular_cartography_mouse_cortex_A1.h5ad")
    b1 = ad.read_h5ad(d / "molecular_cartography_mouse_cortex_B1.h5ad")
    t0 = time.perf_counter()
    model = sigel.SIGEL(epochs=args.fish_epochs).fit(a1, geometry="free", seed=0, n_threads=args.threads,
                                                      progress=False)
    fit_s = time.perf_counter() - t0
    log(f"MC A1 model: {model} ({fit_s:.0f}s)")
    norm = norm_settings_of(model)
    genes = pd.Index(model.embeddings_.index)
    shared = genes[genes.isin(b1.var_names)]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(shared))
    panel, evalg = shared[np.sort(perm[: len(shared) // 2])], shared[np.sort(perm[len(shared) // 2:])]
    b1p = b1[:, panel].copy()
    b1.obs["total"] = np.asarray(b1.X.sum(1)).ravel()
    b1p.obs["total"] = b1.obs["total"].to_numpy()
    # truth on the same free-coordinate raster (pixel means), read back at each cell's pixel
    im = sigel.GeneImages.from_anndata(b1, genes=list(evalg), library_size_key="total", geometry="free",
                                       patch_size=1, min_spots=0, exclude_prefixes=(), **norm)
    truth = pd.DataFrame(im.spot_values(list(evalg)).T.toarray(), index=im.spot_names, columns=list(evalg))
    preds, secs = {}, {}
    for name, meth, kw in gan_runs(args):
        t = time.perf_counter()
        out = impute(model, b1p, genes=list(evalg), method=meth, library_size_key="total", geometry="free",
                     seed=args.seed, n_threads=args.threads, n_steps=args.n_steps, progress=False, **kw)
        secs[name] = time.perf_counter() - t
        preds[name] = frame_of(out, evalg)
    shape = out.uns["sigel_impute"]["params"]["image_shape"]
    summ = impute_summary(impute_metrics(truth, preds))
    # osmFISH as a target of the same model: cross-validation over the shared genes
    osm = ad.read_h5ad(d / "osmfish_sscortex_codeluppi2018.h5ad")
    if "Valid" in osm.obs:
        osm = osm[osm.obs["Valid"].astype(int) == 1].copy()
    t = time.perf_counter()
    cv = impute_cv(model, osm, k=5, method=["gan", "knn", "mean"], geometry="free", seed=args.seed,
                   n_threads=args.threads, progress=False, n_steps=args.fish_steps, min_cells=3)
    for name, kw in args.gan_variant:
        extra = impute_cv(model, osm, k=5, method="gan", geometry="free", seed=args.seed, n_threads=args.threads,
                          progress=False, n_steps=args.fish_steps, min_cells=3, **kw)
        cv = pd.concat([cv, extra.assign(method="gan_" + name)])
    osm_s = time.perf_counter() - t
    osum = impute_summary(cv)
    osm_secs = cv.reset_index().drop_duplicates(["method", "fold"]).groupby("method")["seconds"].sum().to_dict()
    results["fish"] = dict(mc_fit_seconds=fit_s, mc_image_shape=shape, mc_panel=int(len(panel)),
                           mc_eval=int(len(evalg)), mc_summary=summ.reset_index().to_dict(orient="records"),
                           mc_seconds=secs, osmfish_cells=int(osm.n_obs),
                           osmfish_shared=int(cv.index.nunique()),
                           osmfish_cv=osum.reset_index().to_dict(orient="records"), osmfish_seconds=osm_s)
    md = ["### Imputation on imaging geometry (free coordinates)",
          f"Molecular Cartography mouse cortex: model on A1 ({model.embeddings_.shape[0]} genes, {fit_s:.0f}s); "
          f"target B1 ({b1.n_obs} cells, rasterised {shape[0]}x{shape[1]}) with a random panel of {len(panel)} "
          f"genes; the other {len(evalg)} imputed:", "", md_table(summ, secs), "",
          f"osmFISH ({osm.n_obs} valid cells) as target of the A1 model: 5-fold impute_cv over the "
          f"{cv.index.nunique()} shared genes ({osm_s:.0f}s):", "", md_table(osum, osm_secs)]
    return "\n".join(md)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--model", default=None, help="saved SIGEL model of the reference section to reuse")
    p.add_argument("--sections", nargs=2, default=["151673", "151675"], metavar=("REF", "TGT"),
                   help="DLPFC reference and target sections (default 151673 151675)")
    p.add_argument("--save-model", default=None, help="save the fitted DLPFC model here")
    p.add_argument("--n-genes", type=int, default=2000, help="genes to embed when fitting (most detected)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--fish-epochs", type=int, default=30)
    p.add_argument("--n-panel", type=int, default=150)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--n-steps", type=int, default=600, help="GAN training steps")
    p.add_argument("--fish-steps", type=int, default=300, help="GAN steps per fold of the osmFISH CV")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the imputation runs (the GAN's training draws)")
    p.add_argument("--hyper", nargs="*", default=[], metavar="KEY=VALUE",
                   help="SIGEL hyper-parameters of the fitted DLPFC model other than the defaults (e.g. rarefy=auto)")
    p.add_argument("--skip-tangram", action="store_true")
    p.add_argument("--skip-dlpfc", action="store_true")
    p.add_argument("--skip-fish", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--gan-variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="another GAN run (every scenario), scored as gan_NAME (e.g. plain:neighbour_prior=false)")
    args = p.parse_args(argv)
    from bench_embeddings import parse_variant

    args.gan_variant = [parse_variant(v) for v in args.gan_variant]
    import torch

    torch.set_num_threads(args.threads)
    results = {"args": vars(args)}
    parts = []
    if not args.skip_dlpfc:
        parts.append(dlpfc(args, results))
    if not args.skip_fish:
        parts.append(fish(args, results))
    text = "\n\n".join(parts)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
