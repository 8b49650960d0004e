"""Scaling of SIGEL training: genes, image size, processes, throughput settings (issue 10).

    .venv/bin/python benchmarks/bench_scale.py --data ../shared/data            # everything below
    .venv/bin/python benchmarks/bench_scale.py --only genes,nproc --epochs 2

Sections (``--only``, comma-separated; default ``genes,synthetic,large,nproc,throughput``):

* ``genes``      fit time and peak memory vs number of genes: 1k, 2k, 4k, 8k random genes
                 of DLPFC 151673 (nested subsets), ``--epochs`` epochs (1 pre-training +
                 the rest refinement, so every module runs), default model otherwise.
* ``synthetic``  the same beyond the data: a synthetic Visium-like section with 16k genes.
* ``large``      a synthetic 256 x 256-pixel grid (65,536 spots) with 20k genes:
                 peak memory of building the images, the scaffold, and an epoch subset
                 (embedding 1,024 genes + 4 gradient steps), not a full fit.
* ``nproc``      DLPFC 2k genes: 1 process x 1 thread, 1 process x 2 threads,
                 2 processes x 1 thread (torchrun, gloo).
* ``throughput`` gradient-step and embedding throughput (genes/s) vs batch size and threads.
* ``compile``    (not in the default set: compiling takes minutes) eager vs ``torch.compile``
                 gradient steps.
* ``contention`` (not in the default set; also ``--contention``) DLPFC 2k genes with the
                 default thread policy (no ``n_threads``, no ``OMP_NUM_THREADS``): one fit
                 alone, two identical fits started together, and one fit beside a busy
                 non-torch process (a Python busy loop); per-epoch seconds of each, the
                 threads each fit used, and the machine's load (``/proc/loadavg``, the
                 busiest processes) before every scenario. Run the driver with another
                 ``PYTHONPATH`` (e.g. an older checkout's ``python/``) to measure that
                 version the same way.

Every measurement runs in a fresh subprocess, so ``peak_rss_mb`` (``ru_maxrss``)
is that measurement's own peak (it includes ~0.4 GB of interpreter + torch).
Prints one JSON object per measurement and a markdown summary at the end;
``--json`` also writes all records to a file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DLPFC = os.path.join("dlpfc", "dlpfc_151673_counts.h5ad")


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _busiest(n: int = 6) -> list:
    """The ``n`` processes using the most CPU right now (``ps``), as ``'%cpu command'`` strings."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:n + 1]
        return [" ".join(line.split())[:100] for line in out]
    except (OSError, subprocess.SubprocessError):
        return []


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


# ----------------------------------------------------------------- data helpers
def _dlpfc(data: str, n_genes: int | None, seed: int = 0):
    import anndata as ad
    import numpy as np

    a = ad.read_h5ad(os.path.join(data, DLPFC))
    if n_genes is not None and n_genes < a.n_vars:
        order = np.random.default_rng(seed).permutation(a.n_vars)  # nested: 1k is a prefix of 2k ...
        a = a[:, np.sort(order[:n_genes])].copy()
    return a


def _synthetic_visium(n_genes: int, chunk: int = 2000):
    """A synthetic Visium section (~3.2k spots) with ``n_genes`` genes, generated in gene chunks."""
    import anndata as ad

    import sigel

    parts = []
    for i, s in enumerate(range(0, n_genes, chunk)):
        a = sigel.datasets.synthetic_tissue(min(chunk, n_genes - s), shape=(78, 64), geometry="visium", seed=i,
                                            sample_seed=0)
        a.var_names = [f"c{i}_{g}" for g in a.var_names]
        parts.append(a)
    out = ad.concat(parts, axis=1, merge="first")
    out.obsm["spatial"] = parts[0].obsm["spatial"]
    return out


def _large_grid(n_genes: int, side: int, nnz_per_spot: int, seed: int = 0):
    """``side x side`` grid AnnData, ``n_genes`` genes, ~``nnz_per_spot`` detected genes per spot (counts 1-4)."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = side * side
    ii, jj = np.divmod(np.arange(n), side)
    # gene detection rates with a smooth spatial gradient so images are not pure noise
    idx = rng.integers(0, n_genes, size=n * nnz_per_spot, dtype=np.int64)
    shift = ((ii * n_genes // (4 * side)).repeat(nnz_per_spot)) % n_genes
    idx = (idx + shift * (rng.random(idx.size) < 0.3)) % n_genes
    data = rng.integers(1, 5, size=idx.size).astype(np.float32)
    X = sp.csr_matrix((data, idx.astype(np.int32), np.arange(0, n * nnz_per_spot + 1, nnz_per_spot)),
                      shape=(n, n_genes))
    X.sum_duplicates()
    obs = pd.DataFrame({"x": jj.astype(float), "y": ii.astype(float)}, index=[f"s{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"g{i:05d}" for i in range(n_genes)])
    return ad.AnnData(X=X, obs=obs, var=var)


def _train_config(model, n_genes: int):
    try:
        return model._train_config(n_genes)
    except TypeError:  # older facade without the gene count
        return model._train_config()


# -------------------------------------------------------------------- workers
def worker_fit(a) -> dict:
    import sigel  # before torch, as a user script would: its OpenMP settings apply when torch loads
    import torch
    from sigel.train.distributed import get_rank, get_world_size

    auto = a.threads == 0  # the package's default thread policy
    if not auto:
        torch.set_num_threads(a.threads)
    load_before = _loadavg()
    t0 = time.perf_counter()
    if a.dataset == "dlpfc":
        adata = _dlpfc(a.data, a.n_genes)
        kw = dict(library_size_key="sum_umi")
    else:
        adata = _synthetic_visium(a.n_genes)
        kw = {}
    load_s = time.perf_counter() - t0
    rss_data = _rss_mb()
    t0 = time.perf_counter()
    images = sigel.GeneImages.from_anndata(adata, **kw)
    images_s = time.perf_counter() - t0
    del adata
    model = sigel.SIGEL(epochs=a.epochs, pretrain_epochs=1)
    used = set()
    model._callback = lambda *args, **kw: used.add(torch.get_num_threads())
    t0 = time.perf_counter()
    model.fit_images(images, seed=0, progress=False, n_threads=None if auto else a.threads, device="cpu")
    fit_s = time.perf_counter() - t0
    h = model.history_
    return dict(section=a.section, dataset=a.dataset, genes=images.n_genes, image=f"{images.height}x{images.width}",
                patch=model.patch_size_, K=model.n_contexts_, epochs=int(model.epochs_run_),
                processes=get_world_size(), rank=get_rank(), threads="auto" if auto else a.threads,
                threads_used=sorted(used), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                loadavg_before=load_before, loadavg_after=_loadavg(), load_s=round(load_s, 2),
                images_s=round(images_s, 2), fit_s=round(fit_s, 1),
                epoch_s=[round(float(x), 1) for x in h["seconds"]],
                genes_per_s_pretrain=round(images.n_genes / float(h["seconds"].iloc[0]), 1),
                rss_after_data_mb=rss_data, peak_rss_mb=_rss_mb())


def worker_large(a) -> dict:
    import numpy as np
    import torch

    import sigel
    from sigel._model import _auto_patch_size
    from sigel.model.refine import RefineState
    from sigel.model.scaffold import image_knn_graph
    from sigel.train.trainer import embed_all, gradient_steps, make_optimizer

    torch.set_num_threads(a.threads)
    rec = dict(section="large", genes=a.n_genes, side=a.side, nnz_per_spot=a.nnz_per_spot, threads=a.threads)
    t0 = time.perf_counter()
    adata = _large_grid(a.n_genes, a.side, a.nnz_per_spot)
    rec.update(counts_nnz=int(adata.X.nnz), make_counts_s=round(time.perf_counter() - t0, 1), rss_counts_mb=_rss_mb())
    t0 = time.perf_counter()
    images = sigel.GeneImages.from_anndata(adata, geometry="grid")
    rec.update(images=f"{images.height}x{images.width}", images_nnz=int(images.values.nnz),
               images_mb=round((images.values.data.nbytes + images.values.indices.nbytes
                                + images.values.indptr.nbytes) / 2**20, 1),
               build_images_s=round(time.perf_counter() - t0, 1), rss_images_mb=_rss_mb())
    del adata
    t0 = time.perf_counter()
    graph = image_knn_graph(images, k=10)
    rec.update(scaffold_s=round(time.perf_counter() - t0, 1), rss_scaffold_mb=_rss_mb())
    model = sigel.SIGEL()
    cfg = _train_config(model, images.n_genes)
    patch = _auto_patch_size(images.height, images.width, 128)
    mae = model._build_module(patch)
    G = images.n_genes
    n_emb = min(1024, G)
    t0 = time.perf_counter()
    Z = embed_all(mae, images, batch_size=cfg.embed_batch_size, rows=np.arange(n_emb))
    rec.update(patch=patch, embed_1024_s=round(time.perf_counter() - t0, 1), rss_embed_mb=_rss_mb())
    Zfull = torch.zeros(G, Z.shape[1])
    Zfull[:n_emb] = Z
    state = RefineState(embeddings=Zfull, labels=None, selected=None, prototypes=None, center=Zfull.mean(0),
                        bank=torch.nn.functional.normalize(Zfull, dim=1), mixture=None, graph=graph,
                        weights={"recon": 1.0, "contrastive": 0.0, "mixture": 0.0, "scaffold": 1.0})
    opt = make_optimizer(mae, cfg.lr, cfg.weight_decay)
    batches = list(torch.split(torch.randperm(G, generator=torch.Generator().manual_seed(0))[: 4 * cfg.batch_size],
                               cfg.batch_size))
    t0 = time.perf_counter()
    gradient_steps(mae, images, batches, opt, state=state, device=torch.device("cpu"), step0=0, total_steps=100,
                   warmup_steps=10, cfg=cfg, mask_generator=torch.Generator().manual_seed(1), epoch=0)
    s_per_step = (time.perf_counter() - t0) / len(batches)
    rec.update(batch_size=cfg.batch_size, s_per_step=round(s_per_step, 2),
               est_epoch_min=round(s_per_step * G / cfg.batch_size / 60, 1), peak_rss_mb=_rss_mb())
    return rec


def worker_throughput(a) -> dict:
    import numpy as np
    import torch

    import sigel
    from sigel._model import _auto_patch_size
    from sigel.model.refine import RefineState
    from sigel.train.trainer import embed_all, gradient_steps, make_optimizer

    torch.set_num_threads(a.threads)
    images = sigel.GeneImages.from_anndata(_dlpfc(a.data, 1000), library_size_key="sum_umi")
    model = sigel.SIGEL(batch_size=a.batch_size)
    cfg = _train_config(model, images.n_genes)
    mae = model._build_module(_auto_patch_size(images.height, images.width, 128))
    step_mod = torch.compile(mae) if a.compile else mae
    G = images.n_genes
    Z = torch.zeros(G, model.embed_dim)
    state = RefineState(embeddings=Z, labels=None, selected=None, prototypes=None, center=Z.mean(0), bank=Z,
                        mixture=None, graph=None, weights={"recon": 1.0})
    opt = make_optimizer(mae, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)
    n_steps = max(4, 512 // a.batch_size)
    order = torch.randperm(G, generator=gen)
    batches = [order[(i * a.batch_size) % (G - a.batch_size):][: a.batch_size] for i in range(n_steps + 1)]
    kw = dict(state=state, device=torch.device("cpu"), step0=0, total_steps=1000, warmup_steps=10, cfg=cfg,
              mask_generator=gen, epoch=0)
    t0 = time.perf_counter()
    gradient_steps(step_mod, images, batches[:1], opt, **kw)  # warm-up (and compilation)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gradient_steps(step_mod, images, batches[1:], opt, **kw)
    train_gps = n_steps * a.batch_size / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    embed_all(mae, images, batch_size=256, rows=np.arange(512))
    embed_gps = 512 / (time.perf_counter() - t0)
    return dict(section="compile" if a.compile else "throughput", batch_size=a.batch_size, threads=a.threads,
                compile=bool(a.compile), first_step_s=round(first_s, 1), train_genes_per_s=round(train_gps, 1),
                embed_genes_per_s=round(embed_gps, 1), peak_rss_mb=_rss_mb())


# --------------------------------------------------------------------- driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(one_thread: bool = True) -> dict:
    env = dict(os.environ)
    try:  # the sigel this driver sees (the checkout's python/ by default)
        import sigel

        pkg = os.path.dirname(os.path.dirname(os.path.abspath(sigel.__file__)))
    except ImportError:
        pkg = os.path.join(ROOT, "python")
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if one_thread:
        env.setdefault("OMP_NUM_THREADS", "1")
    else:  # measure the package's own thread policy
        for k in ("OMP_NUM_THREADS", "SIGEL_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
            env.pop(k, None)
    return env


def _start(args: list, nproc: int = 1, one_thread: bool = True):
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, *args]
    else:
        cmd = [sys.executable, __file__, *args]
    return subprocess.Popen(cmd, env=_env(one_thread), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(p, t0: float, args: list, nproc: int = 1, timeout: float = 3600) -> list:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    wall = time.perf_counter() - t0
    recs = [json.loads(line[len("@@"):]) for line in out.splitlines() if line.startswith("@@")]
    if p.returncode != 0 or not recs:
        sys.stderr.write(err[-3000:])
        return [dict(args=args, nproc=nproc, error=f"exit {p.returncode}")]
    for r in recs:
        r["wall_s"] = round(wall, 1)
    return recs


def _run(args: list, nproc: int = 1, timeout: float = 3600, one_thread: bool = True) -> list:
    t0 = time.perf_counter()
    return _collect(_start(args, nproc, one_thread), t0, args, nproc, timeout)


def _contention(base: list, n_genes: int = 2000, timeout: float = 3600, report=None) -> list:
    """One fit alone; two identical fits started together; one fit beside a busy Python loop.

    ``report(records)`` is called after each scenario (records are printed as they come).
    """
    args = ["--worker", "fit", "--section", "contention", "--n-genes", str(n_genes), "--threads", "0"] + base
    out = []

    def tag(recs, scenario, machine):
        for i, r in enumerate(recs):
            r.update(scenario=scenario, fit_index=i, machine_before=machine)
        if report is not None:
            report(recs)
        return recs

    machine = dict(loadavg=_loadavg(), busiest=_busiest())
    out += tag(_run(args, timeout=timeout, one_thread=False), "alone", machine)

    machine = dict(loadavg=_loadavg(), busiest=_busiest())
    t0 = time.perf_counter()
    procs = [_start(args, one_thread=False) for _ in range(2)]
    recs = []
    for p in procs:
        recs += _collect(p, t0, args, timeout=timeout)
    out += tag(recs, "two together", machine)

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2.0)
        machine = dict(loadavg=_loadavg(), busiest=_busiest())
        out += tag(_run(args, timeout=timeout, one_thread=False), "beside a busy process", machine)
    finally:
        busy.kill()
        busy.wait()
    return out


def _summary(recs: list) -> str:
    out = []
    fits = [r for r in recs if r.get("section") in ("genes", "synthetic") and r.get("rank", 0) == 0]
    if fits:
        out += ["| data | genes | image | K | epochs | fit (s) | s/epoch | genes/s (pretrain) | peak RSS (MB) |",
                "|---|---:|---|---:|---:|---:|---|---:|---:|"]
        out += [f"| {r['dataset']} | {r['genes']:,} | {r['image']} | {r['K']} | {r['epochs']} | {r['fit_s']} | "
                f"{' / '.join(map(str, r['epoch_s']))} | {r['genes_per_s_pretrain']} | {r['peak_rss_mb']:,} |"
                for r in fits]
    npr = [r for r in recs if r.get("section") == "nproc"]
    if npr:
        out += ["", "| processes x threads | genes | fit (s) | s/epoch | peak RSS per process (MB) |",
                "|---|---:|---:|---|---|"]
        groups: dict = {}
        for r in npr:
            groups.setdefault((r["processes"], r["threads"]), []).append(r)
        for (p, t), rs in groups.items():
            r0 = min(rs, key=lambda r: r["rank"])
            out.append(f"| {p} x {t} | {r0['genes']:,} | {r0['fit_s']} | {' / '.join(map(str, r0['epoch_s']))} | "
                       f"{', '.join(str(r['peak_rss_mb']) for r in sorted(rs, key=lambda r: r['rank']))} |")
    ct = [r for r in recs if r.get("section") == "contention" and "error" not in r]
    if ct:
        solo = [r for r in ct if r["scenario"] == "alone"]
        ref = (sum(sum(r["epoch_s"]) for r in solo) / len(solo)) if solo else None
        out += ["", "| scenario | fit | threads used | s/epoch | epochs total (s) | x alone | load before |",
                "|---|---:|---|---|---:|---:|---|"]
        for r in ct:
            tot = sum(r["epoch_s"])
            ratio = f"{tot / ref:.2f}" if ref else ""
            out.append(f"| {r['scenario']} | {r['fit_index'] + 1} | {r['threads_used']} | "
                       f"{' / '.join(map(str, r['epoch_s']))} | {tot:.1f} | {ratio} | "
                       f"{r['machine_before']['loadavg']} |")
    lg = [r for r in recs if r.get("section") == "large"]
    for r in lg:
        out += ["", f"Large image: {r['genes']:,} genes x {r['images']} pixels ({r['counts_nnz']:,} count nnz, "
                f"images {r['images_nnz']:,} nnz = {r['images_mb']} MB sparse), patch {r['patch']}:",
                "| stage | seconds | peak RSS so far (MB) |", "|---|---:|---:|",
                f"| counts matrix | {r['make_counts_s']} | {r['rss_counts_mb']:,} |",
                f"| build images | {r['build_images_s']} | {r['rss_images_mb']:,} |",
                f"| scaffold (kNN graph) | {r['scaffold_s']} | {r['rss_scaffold_mb']:,} |",
                f"| embed 1,024 genes | {r['embed_1024_s']} | {r['rss_embed_mb']:,} |",
                f"| 4 gradient steps (batch {r['batch_size']}) | {round(4 * r['s_per_step'], 1)} | {r['peak_rss_mb']:,} |",
                f"Estimated epoch: {r['est_epoch_min']} min ({r['s_per_step']} s/step)."]
    tp = [r for r in recs if r.get("section") in ("throughput", "compile")]
    if tp:
        out += ["", "| batch | threads | torch.compile | first step (s) | train genes/s | embed genes/s |",
                "|---:|---:|---|---:|---:|---:|"]
        out += [f"| {r['batch_size']} | {r['threads']} | {'on' if r['compile'] else 'off'} | {r['first_step_s']} | "
                f"{r['train_genes_per_s']} | {r['embed_genes_per_s']} |" for r in tp]
    errs = [r for r in recs if "error" in r]
    if errs:
        out += ["", "Errors: " + "; ".join(f"{r['args']} -> {r['error']}" for r in errs)]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    p.add_argument("--only", default="genes,synthetic,large,nproc,throughput")
    p.add_argument("--epochs", type=int, default=2, help="epochs per fit (1 pre-training + refinement)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process in the scaling runs (0 = the package's default policy)")
    p.add_argument("--genes", default="1000,2000,4000,8000")
    p.add_argument("--synthetic-genes", default="16000")
    p.add_argument("--json", default=None, help="also write all records to this file")
    p.add_argument("--contention", action="store_true", help="run only the contention section")
    p.add_argument("--contention-genes", type=int, default=2000)
    # worker mode (internal)
    p.add_argument("--worker", default=None, choices=["fit", "large", "throughput"])
    p.add_argument("--section", default="genes")
    p.add_argument("--dataset", default="dlpfc")
    p.add_argument("--n-genes", type=int, default=1000)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--nnz-per-spot", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()

    if a.worker:
        rec = {"fit": worker_fit, "large": worker_large, "throughput": worker_throughput}[a.worker](a)
        print("@@" + json.dumps(rec), flush=True)
        return

    data = os.path.abspath(a.data)
    sections = ["contention"] if a.contention else [s.strip() for s in a.only.split(",") if s.strip()]
    base = ["--data", data, "--epochs", str(a.epochs)]
    recs = []

    def add(rs):
        for r in rs:
            print(json.dumps(r), flush=True)
        recs.extend(rs)
        if a.json:  # written as the records come, so an interrupted run keeps what it measured
            with open(a.json, "w") as fh:
                json.dump(dict(machine=_machine(), records=recs), fh, indent=1)

    t_all = time.perf_counter()
    if "genes" in sections:
        for n in [int(x) for x in a.genes.split(",") if x]:
            add(_run(["--worker", "fit", "--section", "genes", "--n-genes", str(n), "--threads", str(a.threads)] + base))
    if "synthetic" in sections:
        for n in [int(x) for x in a.synthetic_genes.split(",") if x]:
            add(_run(["--worker", "fit", "--section", "synthetic", "--dataset", "synthetic", "--n-genes", str(n),
                      "--threads", str(a.threads)] + base))
    if "large" in sections:
        add(_run(["--worker", "large", "--n-genes", "20000", "--side", "256", "--threads", str(a.threads)] + base))
    if "nproc" in sections:
        nargs = ["--worker", "fit", "--section", "nproc", "--n-genes", "2000"] + base
        add(_run(nargs + ["--threads", "1"]))
        add(_run(nargs + ["--threads", "2"]))
        add(_run(nargs + ["--threads", "1"], nproc=2))
    if "throughput" in sections:
        for bs in (32, 64, 128):
            for th in (1, 2):
                add(_run(["--worker", "throughput", "--batch-size", str(bs), "--threads", str(th)] + base))
    if "contention" in sections:
        _contention(base, a.contention_genes, report=add)
    if "compile" in sections:
        for c in ([], ["--compile"]):
            add(_run(["--worker", "throughput", "--batch-size", "64", "--threads", "1"] + c + base))
    summary = _summary(recs)
    print(f"\n## Scale benchmark ({_machine()}; {time.perf_counter() - t_all:.0f} s in all)\n")
    print(summary)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(machine=_machine(), records=recs, summary=summary), fh, indent=1)


if __name__ == "__main__":
    main()
