"""Spatial domains on DLPFC: SpaGCN on all genes vs top-3000 HVGs vs sigel-pruned genes.

For each DLPFC section (ground truth ``obs['layer_guess_reordered']``, 7
domains; NA spots are clustered but not scored) and each seed, SpaGCN 1.2.7
(`sigel.tl.spatial_domains`, no histology) runs on

* ``all``      every gene in ``X`` detected in >= 3 spots,
* ``hvg3000``  the top 3000 highly variable genes (scanpy ``seurat_v3`` on
  counts when scikit-misc is installed, else ``seurat`` on log-normalised data),
* ``pruned_k<keep>``  `sigel.tl.prune_genes` (model contexts, top ``keep``
  of each by Moran's I, contexts without Moran's I signal dropped), one
  condition per ``--keep`` value,
* ``moran_top`` (ablation) the same number of genes as the first
  ``pruned_k``, the top genes by Moran's I alone (no embedding groups),
* ``pruned_svg_k<keep>`` (with ``--svg``) scored with `sigel.tl.svg`.

A SIGEL model per section is loaded from ``--model`` (a path pattern with
``{sample}``) or, when absent, fitted with the default settings and saved
there. Prints a JSON record per run and a markdown summary (ARI / NMI mean ±
sd over seeds, refined labels, and wall times).

    .venv/bin/python benchmarks/bench_domains.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

TRUTH = "layer_guess_reordered"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class SavedResults:
    """Embeddings and contexts read straight from a saved model directory.

    Used when the weights no longer load into the current code (the model
    architecture changed after the fit): pruning needs only the results.
    """

    is_trained = True

    def __init__(self, path: Path):
        from safetensors.torch import load_file

        cfg = json.loads((path / "config.json").read_text())
        t = load_file(str(path / "weights.safetensors"), device="cpu")
        genes = pd.Index(cfg["genes"])
        self.embeddings_ = pd.DataFrame(t["results.embeddings"].numpy(), index=genes)
        mem = t["results.memberships"].numpy()
        self.memberships_ = pd.DataFrame(mem, index=genes, columns=[f"context_{k}" for k in range(mem.shape[1])])
        self.contexts_ = pd.DataFrame({"context": mem.argmax(1), "confidence": mem.max(1)}, index=genes)
        self.fit_params_ = dict(cfg.get("fit_params") or {})
        self.fit_seconds = float(cfg.get("fit_seconds") or 0.0)

    def __repr__(self):
        return f"SavedResults({self.embeddings_.shape[0]} genes x {self.embeddings_.shape[1]} dims)"


def load_or_fit(sigel, adata, path: Path, seed: int, threads: int):
    if (path / "config.json").exists():
        log(f"loading model {path}")
        secs = float(json.loads((path / "config.json").read_text()).get("fit_seconds") or 0.0)
        try:
            return sigel.SIGEL.load(path), secs
        except sigel.SigelInputError as e:
            log(f"the saved weights do not load into this code ({e}); using the saved embeddings and contexts")
            return SavedResults(path), secs
    log(f"fitting the default SIGEL model on {adata.n_obs} spots x {adata.n_vars} genes (saved to {path})")
    t = time.perf_counter()
    model = sigel.SIGEL().fit(adata, library_size_key="sum_umi", seed=seed, n_threads=threads)
    secs = time.perf_counter() - t
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path, overwrite=True)
    return model, secs


def hvg_genes(adata, n_top: int):
    import scanpy as sc

    a = adata.copy()
    try:
        import skmisc  # noqa: F401

        sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=n_top)
        flavor = "seurat_v3"
    except ImportError:
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=n_top)
        flavor = "seurat"
    return a.var_names[a.var["highly_variable"].to_numpy()], flavor


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--samples", nargs="+", default=["151673", "151675"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--model", default=str(HERE / "out" / "models" / "domains_dlpfc_{sample}"),
                    help="saved-model directory pattern with {sample}; fitted and saved when missing")
    ap.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.2],
                    help="prune_genes keep values (fraction or number per group); one 'pruned' condition each, "
                         "the first also sizes 'moran_top'")
    ap.add_argument("--drop", choices=("groups", "genes"), default="groups",
                    help="prune_genes drop= ('genes' adds the suffix _dropgenes to the pruned conditions)")
    ap.add_argument("--n-hvg", type=int, default=3000)
    ap.add_argument("--conditions", nargs="+", default=["all", "hvg3000", "pruned", "moran_top"])
    ap.add_argument("--svg", action="store_true", help="also run pruned_svg (sigel.tl.svg scores; slow)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "out" / "domains"))
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    import sigel
    from sigel.tasks.domains import morans_i_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keeps = [int(k) if k >= 1 else float(k) for k in args.keep]
    sfx = "" if args.drop == "groups" else "_dropgenes"
    base = [c for c in args.conditions if c != "pruned"]
    conditions = [c for c in base if c in ("all", "hvg3000")] + \
        ([f"pruned_k{k}{sfx}" for k in keeps] if "pruned" in args.conditions else []) + \
        [c for c in base if c not in ("all", "hvg3000")] + ([f"pruned_svg_k{keeps[0]}{sfx}"] if args.svg else [])
    records = []
    for sample in args.samples:
        f = Path(args.data) / "dlpfc" / f"dlpfc_{sample}_counts.h5ad"
        adata = ad.read_h5ad(f)
        adata.var_names_make_unique()
        detected = np.asarray((adata.X > 0).sum(axis=0)).ravel() >= 3
        adata = adata[:, detected].copy()
        truth = adata.obs[TRUTH]
        n_dom = int(truth.dropna().nunique())
        model, fit_s = load_or_fit(sigel, adata, Path(args.model.format(sample=sample)), 0, args.threads)
        genesets, prep = {}, {}
        if "all" in conditions:
            genesets["all"] = adata.var_names
        if "hvg3000" in conditions:
            t = time.perf_counter()
            genesets["hvg3000"], flavor = hvg_genes(adata, args.n_hvg)
            prep["hvg3000"] = dict(seconds=time.perf_counter() - t, flavor=flavor)
        t = time.perf_counter()
        moran = morans_i_table(adata, library_size_key="sum_umi")
        moran_s = time.perf_counter() - t
        for i, keep in enumerate(keeps if ("pruned" in args.conditions or "moran_top" in args.conditions) else []):
            t = time.perf_counter()
            sel = sigel.tl.prune_genes(model, adata, keep=keep, score=moran, library_size_key="sum_umi",
                                       drop=args.drop)
            name = f"pruned_k{keep}{sfx}"
            prep[name] = dict(seconds=time.perf_counter() - t + moran_s, n_groups=sel.attrs["n_groups"],
                              n_groups_kept=sel.attrs["n_groups_kept"], score="morans_i")
            genesets[name] = sel.index
            sel.to_csv(out / f"{name}_{sample}.csv")
            if i == 0 and "moran_top" in conditions:
                genesets["moran_top"] = moran.index[:len(sel)]
        if args.svg:
            t = time.perf_counter()
            sel = sigel.tl.prune_genes(model, adata, keep=keeps[0], score="svg", library_size_key="sum_umi",
                                       drop=args.drop)
            name = f"pruned_svg_k{keeps[0]}{sfx}"
            prep[name] = dict(seconds=time.perf_counter() - t, n_groups=sel.attrs["n_groups"],
                              n_groups_kept=sel.attrs["n_groups_kept"], score="svg")
            genesets[name] = sel.index
            sel.to_csv(out / f"{name}_{sample}.csv")
        overlap = ({k: int(len(pd.Index(v).intersection(genesets["hvg3000"]))) for k, v in genesets.items()}
                   if "hvg3000" in genesets else {})
        for cond in [c for c in conditions if c in genesets]:
            genes = genesets[cond]
            for seed in args.seeds:
                t = time.perf_counter()
                lab = sigel.tl.spatial_domains(adata, genes, n_domains=n_dom, seed=seed, library_size_key="sum_umi",
                                               n_threads=args.threads, max_epochs=args.max_epochs)
                secs = time.perf_counter() - t
                sc_ = sigel.tl.domain_scores(lab, truth)
                rec = dict(sample=sample, condition=cond, seed=seed, n_genes=int(len(genes)),
                           n_in_hvg=overlap.get(cond), ari=float(sc_.loc["domain", "ari"]),
                           nmi=float(sc_.loc["domain", "nmi"]), ari_refined=float(sc_.loc["domain_refined", "ari"]),
                           nmi_refined=float(sc_.loc["domain_refined", "nmi"]), n_found=lab.attrs["n_found"],
                           resolution=lab.attrs["resolution"], spagcn_s=round(secs, 1),
                           prep_s=round(prep.get(cond, {}).get("seconds", 0.0), 2), model_fit_s=round(fit_s, 1),
                           n_scored=int(sc_.loc["domain", "n_spots"]), **{k: v for k, v in prep.get(cond, {}).items()
                                                                         if k != "seconds"})
                records.append(rec)
                print(json.dumps(rec), flush=True)
                pd.DataFrame(records).to_csv(out / "domains_runs.csv", index=False)
    df = pd.DataFrame(records)
    print(summarise(df))


def summarise(df: pd.DataFrame) -> str:
    def ms(x):
        return f"{x.mean():.3f} ± {x.std(ddof=1) if len(x) > 1 else 0:.3f}"

    lines = ["| section | genes | n genes | ARI (refined) | NMI (refined) | ARI (raw) | NMI (raw) | SpaGCN s/run | prep s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (sample, cond), g in df.groupby(["sample", "condition"], sort=False):
        lines.append(f"| {sample} | {cond} | {int(g['n_genes'].iloc[0]):,} | {ms(g['ari_refined'])} | "
                     f"{ms(g['nmi_refined'])} | {ms(g['ari'])} | {ms(g['nmi'])} | {g['spagcn_s'].mean():.0f} | "
                     f"{g['prep_s'].iloc[0]:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
