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

* ``--calibration``: depth-homogeneous null genes. On MOB, DLPFC 151673 and
  the prostate cancer section, 300 null genes are planted: each is a real
  gene's total count spread over the spots by a multinomial draw with
  probabilities proportional to the spots' library sizes, i.e. a gene whose
  expression *rate* is the same everywhere, so its counts follow sequencing
  depth, which is itself spatial in real tissue. A model fitted on the real
  genes embeds them (``transform``, as for any new gene) and each test's
  fraction of null genes at p < 0.05 and q < 0.05 (BH over the null genes)
  is reported for sigel (each ``--nulls`` control model), the SPARK-X-style
  test and Moran's I, with the shuffled-positions null (all real genes, spots
  permuted) beside it. ``--seeds`` repeats planting and controls.

    .venv/bin/python benchmarks/bench_svg.py --data ../shared/data
    .venv/bin/python benchmarks/bench_svg.py --model DIR --skip mob
    .venv/bin/python benchmarks/bench_svg.py --data ../shared/data --calibration --seeds 0 1
    .venv/bin/python benchmarks/bench_svg.py --data ../shared/data --skip dlpfc \
        --prostate-calls benchmarks/out/spatialde_prostate_cancer.csv

* ``--compare A.csv B.csv``: two ``--save-scores`` tables (two refits, or one
  model scored with two ``--svg-seed``) side by side: Spearman, shared calls,
  top-200 overlap per method.
* ``--prostate-calls`` / ``--dlpfc-calls``: the same power measures on the
  prostate cancer section / a DLPFC section (``--dlpfc-section``, ``--model``), against SpatialDE's
  calls there (neither has published calls; run
  benchmarks/spatialde_reference.py first, which reproduces the bulb's
  published calls exactly).
"""
from __future__ import annotations

import argparse
import inspect
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


def load_or_fit(sigel, adata, path: Path, threads: int, epochs=None, seed: int = 0, hyper=None, **fit_kw):
    """The model saved at ``path``, or a fit (``SIGEL(**hyper)``, default settings otherwise) saved there."""
    if (path / "config.json").exists():
        log(f"loading model {path}")
        return sigel.SIGEL.load(str(path)), None
    hyper = dict(hyper or {})
    if epochs is not None:
        hyper.update(epochs=epochs, pretrain_epochs=max(1, epochs // 4))
    log(f"fitting a SIGEL model {hyper or '(default settings)'} on {adata.n_obs} spots x {adata.n_vars} genes "
        f"(saved to {path})")
    t = time.perf_counter()
    model = sigel.SIGEL(**hyper).fit(adata, seed=seed, n_threads=threads, **fit_kw)
    secs = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path), overwrite=True)
    return model, secs


def run_three(sigel, model, adata, *, n_null, threads, lib_key=None, genes=None, image_options=None,
              metrics=("cosine",), null="permutation", seed=0, variances=("marginal",), draws=None,
              references=("level",)):
    """sigel svg (one table per metric, null variance and reference), SPARK-X-style (R, via rpy2) and Moran's I on
    the same genes.

    Returns ``({variant: table}, sparkx, moran, seconds)``; a variant is the metric, suffixed ``_local`` for
    ``variance='local'`` and ``_ref-gene`` for ``reference="gene"`` (`variant_name`).
    """
    import torch

    from sigel import tissue
    from sigel._rbridge import sparkx_r

    torch.set_num_threads(threads)
    secs = {}
    sgs = {}
    for variance in variances:
        for metric in metrics:
            for spec in references:
                reference, n_ref = parse_reference(spec, n_null)
                key = variant_name(metric, variance, spec)
                t = time.perf_counter()
                sgs[key] = sigel.tl.svg(model, adata, genes=genes, n_null=n_ref, image_options=image_options,
                                        seed=seed, metric=metric, null=null, variance=variance, draws=draws,
                                        reference=reference, progress=False)
                secs[f"sigel_{key}"] = time.perf_counter() - t
    sg = next(iter(sgs.values()))
    g = sg.index
    X = adata[:, g].X
    t = time.perf_counter()
    sx = sparkx_r(X, tissue.coordinates(adata, log=False), genes=g)
    secs["sparkx"] = time.perf_counter() - t
    t = time.perf_counter()
    mi = sigel.tl.morans_i(adata, genes=g, library_size_key=lib_key)
    secs["moran"] = time.perf_counter() - t
    return {k: v.reindex(g) for k, v in sgs.items()}, sx.reindex(g), mi.reindex(g), secs


def parse_reference(spec: str, n_null: int) -> tuple[str, int]:
    """``'level'`` / ``'gene'``, optionally with its own number of controls (``'gene:6'``): (reference, n_null)."""
    ref, _, n = spec.partition(":")
    if ref not in ("level", "gene"):
        raise SystemExit(f"--reference: expected level or gene[:N_NULL], got {spec!r}")
    return ref, int(n) if n else n_null


def variant_name(metric: str, variance: str, reference: str = "level") -> str:
    """``metric`` for the marginal-variance null, ``<metric>_local`` for ``variance='local'``; ``_ref-<spec>``
    appended for any other reference spec than the plain default (``reference="gene"``: each gene against
    its own controls, the default before Session 14; ``gene:6`` with 6 controls)."""
    name = metric if variance == "marginal" else f"{metric}_{variance}"
    return name if reference == "level" else f"{name}_ref-{reference}"


def scores_table(sgs, sx, mi):
    """One column trio per method: score, p, q (sigel: one trio per metric, ``sigel_<metric>``)."""
    g = next(iter(sgs.values())).index
    cols = {}
    for metric, sg in sgs.items():
        cols.update({f"sigel_{metric}": sg["score"], f"sigel_{metric}_p": sg["pval"],
                     f"sigel_{metric}_q": sg["qval"]})
    cols.update({"sparkx": -np.log10(np.clip(sx["pval"].to_numpy(), 1e-300, None)), "sparkx_p": sx["pval"],
                 "sparkx_q": sx["qval"],
                 "moran": mi["I"].fillna(-1).to_numpy(), "moran_p": mi["pval"], "moran_q": mi["qval"]})
    return pd.DataFrame(cols, index=g)


def read_section(data: Path, section: str):
    """The AnnData of one section, all its genes: ``mob`` (replicate 11, its 260 sample spots),
    ``prostate_cancer`` (the cancer section of the Visium FFPE set) or ``dlpfc151673`` / ``dlpfc151675``."""
    import anndata as ad

    if section == "mob":
        a = ad.read_h5ad(data / "svg" / "mob_rep11_stahl2016.h5ad")
        return a[a.obs["in_MOB_sample_info"].astype(bool)].copy()
    if section == "prostate_cancer":
        a = ad.read_h5ad(data / "cross_sample" / "visium_ffpe_prostate_normal_vs_cancer_giotto_mini.h5ad")
        return a[a.obs["condition"].astype(str).str.lower().str.contains("cancer")].copy()
    if section.startswith("dlpfc"):
        return ad.read_h5ad(data / "dlpfc" / f"dlpfc_{section[5:]}_counts.h5ad")
    raise SystemExit(f"unknown section {section!r}")


def load_mob(data: Path):
    """MOB replicate 11: the 260 spots and the genes SpatialDE tested; the published calls (q < 0.05)."""
    adata = read_section(data, "mob")
    ref = pd.read_csv(data / "svg" / "SPARK-Analysis_Rep11_MOB_spe.csv.gz", index_col=0)
    ref = ref.drop_duplicates("g").set_index("g")
    genes = adata.var_names.intersection(ref.index)
    adata = adata[:, genes].copy()
    adata.obs["x"] = adata.obs["x"].astype(float)
    return adata, ref.loc[genes, "qval"] < 0.05


def load_with_calls(data: Path, section: str, calls: Path):
    """A section without published calls (``prostate_cancer``: the cancer section of the Visium FFPE set;
    ``dlpfc151673``, ``dlpfc151675``) and the genes SpatialDE tested there; its calls (q < 0.05) from ``calls``, a table
    written by benchmarks/spatialde_reference.py."""
    adata = read_section(data, section)
    ref = pd.read_csv(calls).drop_duplicates("g").set_index("g")
    genes = adata.var_names.intersection(ref.index)
    return adata[:, genes].copy(), ref.loc[genes, "qval"] < 0.05


def mob(args, sigel):
    """AUPRC etc. on the bulb against the published SpatialDE calls (`power`)."""
    adata, truth = load_mob(Path(args.data))
    log(f"MOB: {adata.n_obs} spots x {adata.n_vars} genes (SpatialDE-tested); {int(truth.sum())} SpatialDE SVGs")
    # legacy ST: integer array positions with small offsets -> the grid geometry
    return power(args, sigel, adata, truth, Path(args.mob_model), dict(geometry="grid"), args.save_scores,
                 shuffle=not args.no_shuffle)


def prostate(args, sigel):
    """AUPRC etc. on the prostate cancer section against SpatialDE's calls there (`power`); the model is the
    calibration's (``--model-dir``/svg_prostate_cancer, or ``--prostate-model``)."""
    adata, truth = load_with_calls(Path(args.data), "prostate_cancer", Path(args.prostate_calls))
    log(f"prostate cancer: {adata.n_obs} spots x {adata.n_vars} genes (SpatialDE-tested); "
        f"{int(truth.sum())} SpatialDE SVGs")
    path = Path(args.prostate_model or Path(args.model_dir) / "svg_prostate_cancer")
    return power(args, sigel, adata, truth, path, {}, _scores_path(args, "prostate"), shuffle=False)


def _scores_path(args, section: str):
    """Where a section's score table goes beside the bulb's ``--save-scores`` file (``None``: not saved)."""
    return None if not args.save_scores else f"{Path(args.save_scores).with_suffix('')}_{section}.csv"


def dlpfc_calls(args, sigel):
    """AUPRC etc. on a DLPFC section (``--dlpfc-section``) against SpatialDE's calls there (`power`); the model is
    ``--model``."""
    section = f"dlpfc{args.dlpfc_section}"
    adata, truth = load_with_calls(Path(args.data), section, Path(args.dlpfc_calls))
    log(f"DLPFC {args.dlpfc_section}: {adata.n_obs} spots x {adata.n_vars} genes (SpatialDE-tested); "
        f"{int(truth.sum())} SpatialDE SVGs")
    out = power(args, sigel, adata, truth, Path(args.model), dict(library_size_key="sum_umi"),
                _scores_path(args, section), shuffle=False, lib_key="sum_umi")
    return dict(out, section=args.dlpfc_section)


def power(args, sigel, adata, truth, model_path: Path, fit_kw: dict, save_scores, *, shuffle: bool,
          lib_key: str | None = None):
    """Each ranking (sigel per variant, SPARK-X-style, Moran's I) against the reference calls ``truth``: AUPRC,
    reference genes in the top n, calls at q < 0.05; Spearman and top-k overlaps between methods; with
    ``shuffle``, the fraction at p < 0.05 after the spots are shuffled. ``lib_key``: the ``obs`` column of
    library sizes Moran's I normalises by (default: the counts' column sums)."""
    from sklearn.metrics import average_precision_score

    model, fit_s = load_or_fit(sigel, adata, model_path, args.threads, epochs=args.epochs,
                               seed=args.fit_seed, hyper=args.hyper, **fit_kw)
    kw = dict(n_null=args.n_null, threads=args.threads, metrics=args.metrics, null=args.null,
              variances=args.variance, draws=args.draws, references=args.reference, seed=args.svg_seed,
              lib_key=lib_key)  # the same options for the real and the shuffled spots
    sgs, sx, mi, secs = run_three(sigel, model, adata, **kw)
    tab = scores_table(sgs, sx, mi)
    y = truth.reindex(tab.index).fillna(False).to_numpy()
    n_ref = int(y.sum())
    names = [f"sigel_{k}" for k in sgs] + ["sparkx", "moran"]
    out = dict(spots=adata.n_obs, genes=len(tab), reference_svgs=n_ref, fit_seconds=fit_s,
               seconds={k: round(v, 2) for k, v in secs.items()}, methods={})
    for m in names:
        s = tab[m].to_numpy()
        top = np.argsort(-s)[:n_ref]
        out["methods"][m] = dict(
            auprc=round(float(average_precision_score(y, s)), 4),
            random_auprc=round(float(y.mean()), 4),
            overlap_top_n=int(y[top].sum()),
            n_q05=int((tab[f"{m}_q"] < 0.05).sum()),
        )
    rho = tab[names].rank().corr()
    out["spearman"] = {a: {b: round(float(rho.loc[a, b]), 3) for b in rho} for a in rho}
    ov = {}
    for k in (50, 100, 200):
        tops = {m: set(tab[m].nlargest(k).index) for m in names}
        ov[k] = {f"{a}-{b}": len(tops[a] & tops[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    out["top_k_overlap"] = ov
    # calibration on real genes: shuffle the spots' coordinates (pattern-free by construction)
    if shuffle:
        rng = np.random.default_rng(1)
        sh = adata.copy()
        perm = rng.permutation(sh.n_obs)
        sh.X = sh.X[perm]
        sg2, sx2, mi2, secs2 = run_three(sigel, model, sh, **kw)
        out["shuffled_frac_p05"] = {f"sigel_{m}": round(float((t["pval"] < 0.05).mean()), 4)
                                    for m, t in sg2.items()}
        out["shuffled_frac_p05"].update(sparkx=round(float((sx2["pval"] < 0.05).mean()), 4),
                                        moran=round(float((mi2["pval"] < 0.05).mean()), 4))
    if save_scores:
        tab.to_csv(save_scores)
    return out


def dlpfc(args, sigel):
    adata = read_section(Path(args.data), "dlpfc151673")
    log(f"DLPFC 151673: {adata.n_obs} spots x {adata.n_vars} genes")
    model, fit_s = load_or_fit(sigel, adata, Path(args.model), args.threads, epochs=args.epochs,
                               hyper=args.hyper, library_size_key="sum_umi")
    opts = {"library_size_key": "sum_umi"}
    sgs, sx, mi, secs = run_three(sigel, model, adata, n_null=args.n_null, threads=args.threads,
                                  lib_key="sum_umi", image_options=opts, metrics=args.metrics, null=args.null,
                                  variances=args.variance, draws=args.draws, references=args.reference)
    tab = scores_table(sgs, sx, mi)
    names = [f"sigel_{k}" for k in sgs] + ["sparkx", "moran"]
    rho = tab[names].rank().corr()
    return dict(spots=adata.n_obs, genes=len(tab), fit_seconds=fit_s,
                seconds={k: round(v, 2) for k, v in secs.items()},
                n_q05={m: int((tab[f"{m}_q"] < 0.05).sum()) for m in names},
                spearman={a: {b: round(float(rho.loc[a, b]), 3) for b in rho} for a in rho})


# ====================================================================== calibration
def calibration_sections(args):
    """(name, AnnData, library_size_key, fit options, model directory) of the three calibration sections.

    MOB and DLPFC share their models with the AUPRC / timing runs (``--mob-model``, ``--model``).
    """
    data = Path(args.data)
    mob_ad, _ = load_mob(data)
    dl = read_section(data, "dlpfc151673")
    pr = read_section(data, "prostate_cancer")
    return [("mob", mob_ad, None, dict(geometry="grid"), Path(args.mob_model)),
            ("dlpfc151673", dl, "sum_umi", dict(library_size_key="sum_umi"), Path(args.model)),
            ("prostate_cancer", pr, None, {}, Path(args.model_dir) / "svg_prostate_cancer")]


def plant_null_genes(adata, n: int, lib: np.ndarray, seed: int, *, min_total: int = 20):
    """``adata`` with ``n`` depth-homogeneous null genes appended (``null_<gene>``); their names.

    Each null gene takes a real gene's total count ``T`` (genes with ``T >=
    min_total``, drawn without replacement) and spreads it over the spots as
    ``Multinomial(T, lib / lib.sum())``.
    """
    import anndata as ad
    import scipy.sparse as sp

    X = sp.csc_matrix(adata.X)
    tot = np.asarray(X.sum(axis=0)).ravel()
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(tot >= min_total)
    src = rng.choice(pool, size=min(n, len(pool)), replace=False)
    prob = lib / lib.sum()
    Y = np.stack([rng.multinomial(int(t), prob) for t in tot[src]], axis=1)  # spots x n (n small)
    names = [f"null_{g}" for g in adata.var_names[src]]
    new = ad.AnnData(sp.csr_matrix(Y.astype(np.float32)), obs=adata.obs[[]].copy(),
                     var=pd.DataFrame(index=names))
    out = ad.concat([adata, new], axis=1, merge="first", uns_merge="first")
    out.obs = adata.obs.copy()
    out.obsm = adata.obsm.copy()
    return out, pd.Index(names)


def _fractions(p: pd.Series) -> dict:
    from sigel._stats import bh

    p = p.dropna().to_numpy(dtype=float)
    return dict(p05=round(float((p < 0.05).mean()), 4), q05=round(float((bh(p) < 0.05).mean()), 4), n=len(p))


def _sigel_variants(args):
    """(null, metric, variance, reference) of every sigel run of the calibration (the variance matters for the ZINB
    null only)."""
    return [(n, m, v, s) for n in args.nulls for m in args.metrics for v in args.variance for s in args.reference
            if n == "zinb" or v == "marginal"]


def _null_fractions(sigel, args, model, adata, genes, coords, opts, lib_key, seed, tested=None) -> dict:
    """Fractions called among ``genes`` (all null by construction): sigel per control model and metric
    (with seconds), the SPARK-X-style test and Moran's I. ``tested``: the genes sigel tests in the same call
    (default ``genes``), e.g. every real gene besides the planted ones, as a user's run would."""
    from sigel._rbridge import sparkx_r

    out = {}
    for null, metric, variance, spec in _sigel_variants(args):
        reference, n_ref = parse_reference(spec, args.n_null)
        t = time.perf_counter()
        sg = sigel.tl.svg(model, adata, genes=genes if tested is None else tested, n_null=n_ref, null=null,
                          metric=metric, image_options=opts, seed=seed, variance=variance, draws=args.draws,
                          reference=reference, progress=False)
        out[f"sigel_{null}_{variant_name(metric, variance, spec)}"] = dict(_fractions(sg["pval"].reindex(genes)),
                                                                             seconds=round(time.perf_counter() - t, 1))
    out["sparkx"] = _fractions(sparkx_r(adata[:, genes].X, coords, genes=genes)["pval"])
    out["moran"] = _fractions(sigel.tl.morans_i(adata, genes=genes, library_size_key=lib_key)["pval"])
    return out


def calibration(args, sigel):
    """Fraction of depth-homogeneous null genes (and of shuffled real genes) called, per section and seed."""
    import torch

    from sigel import tissue

    torch.set_num_threads(args.threads)
    out = {}
    for name, adata, lib_key, fit_kw, model_dir in calibration_sections(args):
        if args.sections and name not in args.sections:
            continue
        lib = tissue.library_size(adata, library_size_key=lib_key)
        cv = float(lib.std() / lib.mean())
        log(f"{name}: {adata.n_obs} spots x {adata.n_vars} genes; library size CV {cv:.2f}")
        model, fit_s = load_or_fit(sigel, adata, model_dir, args.threads, epochs=args.epochs, hyper=args.hyper,
                                  **fit_kw)
        opts = {"library_size_key": lib_key} if lib_key else None
        coords = tissue.coordinates(adata, log=False)
        rows = []
        for seed in args.seeds:
            ad2, nulls = plant_null_genes(adata, args.n_planted, lib, seed)
            if lib_key is None:  # the planted genes must not change the spots' depth
                ad2.obs["_lib"] = lib
                opts_s, lk = {"library_size_key": "_lib"}, "_lib"
            else:
                opts_s, lk = opts, lib_key
            tested = None
            if args.among_all:  # the planted genes tested together with every real gene the model embeds
                tested = model.embeddings_.index.intersection(ad2.var_names, sort=False).append(pd.Index(nulls))
            rec = dict(seed=seed, kind="depth_homogeneous" + ("_among_all" if args.among_all else ""),
                       **_null_fractions(sigel, args, model, ad2, nulls, coords, opts_s, lk, seed, tested))
            rows.append(rec)
            log(json.dumps(rec))
            # shuffled positions: all real genes (the easy null)
            if not args.no_shuffle:
                rng = np.random.default_rng(100 + seed)
                perm = rng.permutation(adata.n_obs)
                sh = adata.copy()
                sh.X = sh.X[perm]
                if lib_key is not None:  # a spot's library size travels with its counts
                    sh.obs[lib_key] = adata.obs[lib_key].to_numpy()[perm]
                rec2 = dict(seed=seed, kind="shuffled_positions",
                            **_null_fractions(sigel, args, model, sh, model.embeddings_.index, coords, opts,
                                              lib_key, seed))
                rows.append(rec2)
                log(json.dumps(rec2))
        out[name] = dict(spots=adata.n_obs, genes=adata.n_vars, library_size_cv=round(cv, 2),
                         fit_seconds=fit_s, rows=rows)
    return out


def compare_tables(path_a: str, path_b: str) -> pd.DataFrame:
    """Two score tables (``--save-scores``) side by side, per method: Spearman of the scores over the common
    genes, calls at q < 0.05 in each and the share of the smaller set found in both, top-200 overlap."""
    from scipy.stats import spearmanr

    a, b = pd.read_csv(path_a, index_col=0), pd.read_csv(path_b, index_col=0)
    g = a.index.intersection(b.index)
    rows = []
    for m in [c for c in a.columns if f"{c}_q" in a.columns and c in b.columns]:
        ca, cb = set(g[a.loc[g, f"{m}_q"] < 0.05]), set(g[b.loc[g, f"{m}_q"] < 0.05])
        ta, tb = set(a.loc[g, m].nlargest(200).index), set(b.loc[g, m].nlargest(200).index)
        rows.append(dict(method=m, genes=len(g), spearman=round(float(spearmanr(a.loc[g, m], b.loc[g, m])[0]), 3),
                         calls=f"{len(ca)} / {len(cb)}",
                         shared=round(len(ca & cb) / max(1, min(len(ca), len(cb))), 3), top200=len(ta & tb)))
    return pd.DataFrame(rows)


def calibration_markdown(res) -> str:
    methods = [k for k in res["calibration"][next(iter(res["calibration"]))]["rows"][0] if k.startswith("sigel_")]
    methods += ["sparkx", "moran"]
    lines = ["| section | null genes | seed | " + " | ".join(f"{m} p<0.05 / q<0.05" for m in methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]
    for name, sec in res["calibration"].items():
        for r in sec["rows"]:
            cells = [f"{r[m]['p05']:.3f} / {r[m]['q05']:.3f}" for m in methods]
            lines.append(f"| {name} (lib CV {sec['library_size_cv']}) | {r['kind']} | {r['seed']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(res):
    lines = ["## Spatially variable genes (issue 6)", ""]
    titles = dict(mob="MOB replicate 11 ({spots} spots, {genes} genes tested by SpatialDE; reference: "
                      "{reference_svgs} published SpatialDE SVGs at q < 0.05).",
                  prostate="Prostate cancer section ({spots} spots, {genes} genes tested by SpatialDE; reference: "
                           "{reference_svgs} SpatialDE SVGs at q < 0.05, benchmarks/spatialde_reference.py).",
                  dlpfc_calls="DLPFC {section} ({spots} spots, {genes} genes tested by SpatialDE; reference: "
                              "{reference_svgs} SpatialDE SVGs at q < 0.05, benchmarks/spatialde_reference.py).")
    for name in ("mob", "prostate", "dlpfc_calls"):
        if name not in res:
            continue
        m = res[name]
        lines += [titles[name].format(**m), "",
                  "| method | AUPRC (random {:.3f}) | reference genes in top {} | genes at q < 0.05 | seconds |".format(
                      m["methods"]["moran"]["random_auprc"], m["reference_svgs"]),
                  "|---|---|---|---|---|"]
        sec = m["seconds"]
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
                  f"sigel svg {json.dumps(d['seconds'])}, "
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
    ap.add_argument("--n-null", type=int, default=None, help="controls per gene (default: the library default)")
    ap.add_argument("--draws", type=lambda v: v if v == "depth" else int(v), default=None,
                    help="depth-matched draws per vector for sigel svg: a number or 'depth' "
                         "(default: the library default)")
    ap.add_argument("--reference", nargs="+", default=None, metavar="REF[:N_NULL]",
                    help="sigel svg reference(s) side by side (tl.svg(reference=...), 'level' or 'gene', each with "
                         "its own number of controls after a colon, e.g. level gene:6; default: the library default)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs when a model must be fitted (default: the SIGEL defaults)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["mob", "dlpfc"])
    ap.add_argument("--no-shuffle", action="store_true", help="skip the shuffled-spots calibration on MOB")
    ap.add_argument("--among-all", action="store_true",
                    help="calibration: sigel tests the planted null genes together with every real gene (as a "
                         "user's run would; the reference then pools all genes' controls), not on their own")
    ap.add_argument("--svg-seed", type=int, default=0, help="tl.svg(seed=...) of the power runs (controls, draws)")
    ap.add_argument("--compare", nargs=2, default=None, metavar="SCORES.csv",
                    help="only compare two --save-scores tables (e.g. two refits): per method, Spearman of the "
                         "scores, calls at q < 0.05 shared, top-200 overlap")
    ap.add_argument("--prostate-calls", default=None,
                    help="SpatialDE table of the prostate cancer section (benchmarks/spatialde_reference.py): "
                         "also score the power there")
    ap.add_argument("--dlpfc-calls", default=None,
                    help="SpatialDE table of a DLPFC section (benchmarks/spatialde_reference.py): also score the "
                         "power there, with the --model model")
    ap.add_argument("--dlpfc-section", default="151673", choices=["151673", "151675"],
                    help="the section of --dlpfc-calls")
    ap.add_argument("--prostate-model", default=None,
                    help="prostate model directory (default: --model-dir/svg_prostate_cancer, shared with "
                         "--calibration); fitted and saved when missing")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--calibration", action="store_true",
                    help="depth-homogeneous null genes on MOB, DLPFC 151673 and prostate cancer (see above)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="planting / control seeds (calibration)")
    ap.add_argument("--nulls", nargs="+", default=["permutation", "zinb"], help="sigel control models to compare")
    ap.add_argument("--n-planted", type=int, default=300, help="null genes planted per section (calibration)")
    ap.add_argument("--fit-seed", type=int, default=0, help="seed of a model that has to be fitted")
    ap.add_argument("--hyper", nargs="*", default=[], metavar="KEY=VALUE",
                    help="SIGEL settings of a model that has to be fitted (e.g. denoise=split)")
    ap.add_argument("--save-scores", default=None, help="MOB: write the per-gene score table (CSV) here")
    ap.add_argument("--sections", nargs="*", default=[], choices=["mob", "dlpfc151673", "prostate_cancer"],
                    help="calibration sections to run (default all)")
    ap.add_argument("--metrics", nargs="+", default=["cosine", "whitened"], help="sigel svg metrics to compare")
    ap.add_argument("--null", default="zinb", help="sigel control model for the AUPRC / timing runs (default: the library default)")
    ap.add_argument("--variance", nargs="+", default=["marginal", "local"], choices=["marginal", "local"],
                    help="variance(s) the ZINB null is fitted to (tl.svg(variance=...)), side by side")
    ap.add_argument("--model-dir", default=str(HERE / "out" / "models"),
                    help="where calibration models are loaded from / saved to")
    args = ap.parse_args(argv)
    if args.compare:
        from bench_fit_dlpfc import markdown_table

        print(markdown_table(compare_tables(*args.compare)))
        return
    sys.path.insert(0, str(HERE.parent / "python"))
    import sigel
    from bench_fit_dlpfc import parse_settings

    args.hyper = parse_settings(args.hyper)
    defaults = inspect.signature(sigel.tl.svg).parameters  # unset options run what a user gets
    for name in ("n_null", "draws"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name].default)
    if args.reference is None:
        args.reference = [defaults["reference"].default]

    res = dict(machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               n_null=args.n_null, draws=args.draws, threads=args.threads)
    if args.calibration:
        res.update(nulls=args.nulls, metrics=args.metrics, calibration=calibration(args, sigel))
        print(json.dumps(res, indent=1))
        print(calibration_markdown(res))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1))
        return
    if "mob" not in args.skip:
        res["mob"] = mob(args, sigel)
        log(json.dumps(res["mob"]))
    if args.prostate_calls:
        res["prostate"] = prostate(args, sigel)
        log(json.dumps(res["prostate"]))
    if args.dlpfc_calls:
        res["dlpfc_calls"] = dlpfc_calls(args, sigel)
        log(json.dumps(res["dlpfc_calls"]))
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
