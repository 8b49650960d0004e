"""Spatially variable genes: sigel vs the SPARK-X-style test vs Moran's I (issue 6).

* MOB (Stahl et al. 2016, replicate 11; the 260 spots of the SpatialDE/SPARK
  analyses, the genes SpatialDE tested): each ranking against the published
  SpatialDE calls (q < 0.05) -- AUPRC, overlap of the top-n lists with the
  n reference genes, top-k overlaps between methods, Spearman correlations,
  run times; plus the calibration of the two tests on the MOB genes after a
  spatial shuffle of the spots (fraction p < 0.05).
* DLPFC 151673 (all ~8.5k genes): run times of the three methods.

A SIGEL model per data set is loaded from ``--mob-model`` / ``--model`` when
the directory exists, else fitted with the default settings and saved there
(DLPFC shares its default path with benchmarks/bench_domains.py).

    .venv/bin/python benchmarks/bench_svg.py --data ../shared/data
    .venv/bin/python benchmarks/bench_svg.py --model DIR --skip mob
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def log(msg):
    print(f"[bench_svg {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_or_fit(sigel, adata, path: Path, threads: int, epochs=None, **fit_kw):
    if (path / "config.json").exists():
        log(f"loading model {path}")
        return sigel.SIGEL.load(str(path)), None
    hyper = {} if epochs is None else dict(epochs=epochs, pretrain_epochs=max(1, epochs // 4))
    log(f"fitting a SIGEL model {hyper or '(default settings)'} on {adata.n_obs} spots x {adata.n_vars} genes "
        f"(saved to {path})")
    t = time.perf_counter()
    model = sigel.SIGEL(**hyper).fit(adata, seed=0, n_threads=threads, **fit_kw)
    secs = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path), overwrite=True)
    return model, secs


def run_three(sigel, model, adata, *, n_null, threads, lib_key=None, genes=None, image_options=None):
    """sigel svg, SPARK-X-style (R, via rpy2) and Moran's I on the same genes; tables + seconds."""
    import torch

    from sigel._rbridge import sparkx_r
    from sigel.sim import _spot_coords

    torch.set_num_threads(threads)
    secs = {}
    t = time.perf_counter()
    sg = sigel.tl.svg(model, adata, genes=genes, n_null=n_null, image_options=image_options, seed=0)
    secs["sigel_svg"] = time.perf_counter() - t
    g = sg.index
    X = adata[:, g].X
    t = time.perf_counter()
    sx = sparkx_r(X, _spot_coords(adata, "spatial"), genes=g)
    secs["sparkx"] = time.perf_counter() - t
    t = time.perf_counter()
    mi = sigel.tl.morans_i(adata, genes=g, library_size_key=lib_key)
    secs["moran"] = time.perf_counter() - t
    return sg, sx.reindex(g), mi.reindex(g), secs


def scores_table(sg, sx, mi):
    return pd.DataFrame({
        "sigel": sg["score"], "sigel_p": sg["pval"], "sigel_q": sg["qval"],
        "sparkx": -np.log10(np.clip(sx["pval"].to_numpy(), 1e-300, None)), "sparkx_p": sx["pval"],
        "sparkx_q": sx["qval"],
        "moran": mi["I"].fillna(-1).to_numpy(), "moran_p": mi["pval"], "moran_q": mi["qval"],
    }, index=sg.index)


def mob(args, sigel):
    import anndata as ad
    from sklearn.metrics import average_precision_score

    path = Path(args.data) / "svg"
    adata = ad.read_h5ad(path / "mob_rep11_stahl2016.h5ad")
    adata = adata[adata.obs["in_MOB_sample_info"].astype(bool)].copy()
    ref = pd.read_csv(path / "SPARK-Analysis_Rep11_MOB_spe.csv.gz", index_col=0)
    ref = ref.drop_duplicates("g").set_index("g")
    genes = adata.var_names.intersection(ref.index)
    adata = adata[:, genes].copy()
    adata.obs["x"] = adata.obs["x"].astype(float)
    truth = ref.loc[genes, "qval"] < 0.05
    log(f"MOB: {adata.n_obs} spots x {adata.n_vars} genes (SpatialDE-tested); {int(truth.sum())} SpatialDE SVGs")
    # legacy ST: integer array positions with small offsets -> the grid geometry
    model, fit_s = load_or_fit(sigel, adata, Path(args.mob_model), args.threads, epochs=args.epochs,
                               geometry="grid")
    sg, sx, mi, secs = run_three(sigel, model, adata, n_null=args.n_null, threads=args.threads)
    tab = scores_table(sg, sx, mi)
    y = truth.reindex(tab.index).fillna(False).to_numpy()
    n_ref = int(y.sum())
    out = dict(spots=adata.n_obs, genes=len(tab), reference_svgs=n_ref, fit_seconds=fit_s,
               seconds={k: round(v, 2) for k, v in secs.items()}, methods={})
    for m in ("sigel", "sparkx", "moran"):
        s = tab[m].to_numpy()
        top = np.argsort(-s)[:n_ref]
        out["methods"][m] = dict(
            auprc=round(float(average_precision_score(y, s)), 4),
            random_auprc=round(float(y.mean()), 4),
            overlap_top_n=int(y[top].sum()),
            n_q05=int((tab[f"{m}_q"] < 0.05).sum()),
        )
    rho = tab[["sigel", "sparkx", "moran"]].rank().corr()
    out["spearman"] = {a: {b: round(float(rho.loc[a, b]), 3) for b in rho} for a in rho}
    ov = {}
    for k in (50, 100, 200):
        tops = {m: set(tab[m].nlargest(k).index) for m in ("sigel", "sparkx", "moran")}
        ov[k] = {f"{a}-{b}": len(tops[a] & tops[b]) for a, b in (("sigel", "sparkx"), ("sigel", "moran"),
                                                                   ("sparkx", "moran"))}
    out["top_k_overlap"] = ov
    # calibration on real genes: shuffle the spots' coordinates (pattern-free by construction)
    if not args.no_shuffle:
        rng = np.random.default_rng(1)
        sh = adata.copy()
        perm = rng.permutation(sh.n_obs)
        sh.X = sh.X[perm]
        sg2, sx2, mi2, secs2 = run_three(sigel, model, sh, n_null=args.n_null, threads=args.threads)
        out["shuffled_frac_p05"] = dict(sigel=round(float((sg2["pval"] < 0.05).mean()), 4),
                                        sparkx=round(float((sx2["pval"] < 0.05).mean()), 4),
                                        moran=round(float((mi2["pval"] < 0.05).mean()), 4))
    if args.save_tables:
        tab.to_csv(Path(args.save_tables) / "mob_svg_scores.csv")
    return out


def dlpfc(args, sigel):
    import anndata as ad

    adata = ad.read_h5ad(Path(args.data) / "dlpfc" / "dlpfc_151673_counts.h5ad")
    log(f"DLPFC 151673: {adata.n_obs} spots x {adata.n_vars} genes")
    model, fit_s = load_or_fit(sigel, adata, Path(args.model), args.threads, epochs=args.epochs,
                               library_size_key="sum_umi")
    opts = {"library_size_key": "sum_umi"}
    sg, sx, mi, secs = run_three(sigel, model, adata, n_null=args.n_null, threads=args.threads,
                                 lib_key="sum_umi", image_options=opts)
    tab = scores_table(sg, sx, mi)
    rho = tab[["sigel", "sparkx", "moran"]].rank().corr()
    return dict(spots=adata.n_obs, genes=len(tab), fit_seconds=fit_s,
                seconds={k: round(v, 2) for k, v in secs.items()},
                n_q05={m: int((tab[f"{m}_q"] < 0.05).sum()) for m in ("sigel", "sparkx", "moran")},
                spearman={a: {b: round(float(rho.loc[a, b]), 3) for b in rho} for a in rho})


def markdown(res):
    lines = ["## Spatially variable genes (issue 6)", ""]
    if "mob" in res:
        m = res["mob"]
        lines += [f"MOB replicate 11 ({m['spots']} spots, {m['genes']} genes tested by SpatialDE; "
                  f"reference: {m['reference_svgs']} published SpatialDE SVGs at q < 0.05).", "",
                  "| method | AUPRC (random {:.3f}) | reference genes in top {} | genes at q < 0.05 | seconds |".format(
                      m["methods"]["sigel"]["random_auprc"], m["reference_svgs"]),
                  "|---|---|---|---|---|"]
        sec = {"sigel": m["seconds"]["sigel_svg"], "sparkx": m["seconds"]["sparkx"], "moran": m["seconds"]["moran"]}
        for k, v in m["methods"].items():
            lines.append(f"| {k} | {v['auprc']:.3f} | {v['overlap_top_n']} | {v['n_q05']} | {sec[k]:.1f} |")
        lines += ["", f"Spearman between rankings: {json.dumps(m['spearman'])}",
                  f"Top-k overlaps: {json.dumps(m['top_k_overlap'])}"]
        if "shuffled_frac_p05" in m:
            lines.append(f"Calibration (spots shuffled, fraction p < 0.05): {json.dumps(m['shuffled_frac_p05'])}")
        if m.get("fit_seconds"):
            lines.append(f"Model fit: {m['fit_seconds']:.0f} s.")
        lines.append("")
    if "dlpfc" in res:
        d = res["dlpfc"]
        lines += [f"DLPFC 151673 ({d['spots']} spots x {d['genes']} genes): seconds "
                  f"sigel svg {d['seconds']['sigel_svg']:.1f}, SPARK-X-style {d['seconds']['sparkx']:.1f}, "
                  f"Moran's I {d['seconds']['moran']:.1f}; genes at q < 0.05 {json.dumps(d['n_q05'])}; "
                  f"Spearman {json.dumps(d['spearman'])}."]
    lines.append(f"\nMachine: {res['machine']}; n_null = {res['n_null']}; threads = {res['threads']}.")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--model", default=str(HERE / "out" / "models" / "domains_dlpfc_151673"),
                    help="DLPFC 151673 model directory (loaded if it exists, else fitted and saved)")
    ap.add_argument("--mob-model", default=str(HERE / "out" / "models" / "svg_mob_rep11"))
    ap.add_argument("--n-null", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs when a model must be fitted (default: the SIGEL defaults)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["mob", "dlpfc"])
    ap.add_argument("--no-shuffle", action="store_true", help="skip the shuffled-spots calibration on MOB")
    ap.add_argument("--save-tables", default=None, help="folder for the per-gene score tables")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "python"))
    import sigel

    res = dict(machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               n_null=args.n_null, threads=args.threads)
    if "mob" not in args.skip:
        res["mob"] = mob(args, sigel)
        log(json.dumps(res["mob"]))
    if "dlpfc" not in args.skip:
        res["dlpfc"] = dlpfc(args, sigel)
        log(json.dumps(res["dlpfc"]))
    print(json.dumps(res, indent=1))
    print(markdown(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
