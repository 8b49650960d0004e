"""Command line: ``sigel train`` and ``sigel demo`` (the README's main job).

Outputs are written into a temporary sibling of ``--out`` and renamed into
place at the end, so ``OUT`` never mixes files of two runs: an interrupted
run leaves the previous results untouched. A non-empty ``OUT`` is refused
unless ``--overwrite`` is given, and then only when it holds the outputs of
an earlier run (``sigel-outputs.json`` lists them). Errors print one line,
``sigel: error: ...``, and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

OUTPUTS_FILE = "sigel-outputs.json"
OUTPUT_NAMES = ("embeddings.tsv", "contexts.tsv", "memberships.tsv", "history.json", "model", "report.html")


def write_outputs(model, out: Path, *, title: str) -> dict:
    """Write the tables, history, model and HTML report of a fitted model into the directory ``out``.

    ``out`` should be new or empty (the command line passes a fresh temporary
    directory); ``sigel-outputs.json``, written last, lists what was written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from ._validate import jsonable
    from .report import write_report

    out.mkdir(parents=True, exist_ok=True)
    emb = model.embeddings_.copy()
    emb.index.name = "gene"
    emb.to_csv(out / "embeddings.tsv", sep="\t")
    ctx = model.contexts_[["context", "confidence"]].copy()
    ctx.index.name = "gene"
    ctx.to_csv(out / "contexts.tsv", sep="\t")
    mem = model.memberships_.copy()
    mem.index.name = "gene"
    mem.to_csv(out / "memberships.tsv", sep="\t")
    hist = model.history_.reset_index(drop=True)
    records = jsonable(hist.to_dict(orient="records"))  # NaN -> null: strict JSON
    (out / "history.json").write_text(json.dumps(records, indent=1, allow_nan=False))
    model.save(out / "model")
    write_report(model, out / "report.html", title=title)
    (out / OUTPUTS_FILE).write_text(json.dumps({"format": "sigel-outputs", "files": list(OUTPUT_NAMES)}, indent=1))
    return {p: str(out / p) for p in OUTPUT_NAMES}


# ------------------------------------------------------------- output folder
def _is_previous_output(out: Path) -> list:
    """Names in ``out`` that an earlier ``sigel train`` did not write (empty: safe to replace)."""
    marker = out / OUTPUTS_FILE
    try:
        listed = set(json.loads(marker.read_text()).get("files", [])) if marker.is_file() else set()
    except (OSError, ValueError, AttributeError):
        listed = set()
    ours = listed | set(OUTPUT_NAMES) | {OUTPUTS_FILE}  # (runs before the marker existed wrote the same names)
    model = out / "model"
    if model.is_dir() and not model.is_symlink():
        try:
            from ._model import _owned_files

            extra = sorted(set(p.name for p in model.iterdir()) - set(_owned_files(model)))
        except Exception:
            extra = ["model"]
        if extra:
            return [f"model/{n}" if n != "model" else n for n in extra]
    return [n for n in sorted(p.name for p in out.iterdir()) if n not in ours]


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an unusable ``--out`` before any work: a file, a non-empty folder (without ``--overwrite``),
    a folder holding files sigel did not write, or an unwritable location."""
    from ._validate import SigelInputError

    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise SigelInputError(f"--out {str(out)!r} exists and is not a directory")
        if any(out.iterdir()):
            if not overwrite:
                raise SigelInputError(f"--out {str(out)!r} is not empty; pass --overwrite to replace the results "
                                      "of an earlier run, or choose another folder")
            foreign = _is_previous_output(out)
            if foreign:
                raise SigelInputError(f"--out {str(out)!r} holds files sigel did not write ({foreign[:5]}); "
                                      "refusing to replace it even with --overwrite")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SigelInputError(f"--out {str(out)!r}: cannot create files in {str(parent)!r}")


def _remove_previous_output(old: Path) -> None:
    """Delete a renamed-away earlier output folder: only the names its marker lists (the model by its manifest)."""
    from ._model import _owned_files

    for name in OUTPUT_NAMES + (OUTPUTS_FILE,):
        p = old / name
        if p.is_dir() and not p.is_symlink():
            try:
                for f in _owned_files(p):
                    if (p / f).is_file():
                        (p / f).unlink()
                p.rmdir()
            except Exception:
                pass
        elif p.is_file() or p.is_symlink():
            p.unlink()
    try:
        old.rmdir()
    except OSError:
        print(f"sigel: kept {old} (it holds files sigel did not write)", file=sys.stderr)


def publish(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder ``tmp`` to ``out`` (replacing earlier results there)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        _remove_previous_output(old)


# ----------------------------------------------------------------------- fit
def _fit(adata, args):
    from . import SIGEL

    hyper = {}
    if args.epochs is not None:
        hyper["epochs"] = args.epochs
    if args.n_contexts is not None:
        hyper["n_contexts"] = args.n_contexts
    model = SIGEL(**hyper)
    fit_kw = dict(device=args.device, seed=args.seed, progress=not args.quiet, n_threads=args.threads)
    layer = getattr(args, "layer", None)
    lib = getattr(args, "library_size_key", None)
    spatial_key = getattr(args, "spatial_key", None)
    if args.n_genes:
        from . import tl

        kw = dict(layer=layer, library_size_key=lib)
        if spatial_key:
            kw["spatial_key"] = spatial_key
        mi = tl.morans_i(adata, **kw)
        fit_kw["genes"] = list(mi.index[: args.n_genes])
    if lib:
        fit_kw["library_size_key"] = lib
    if layer:
        fit_kw["layer"] = layer
    if spatial_key:
        fit_kw["spatial_key"] = spatial_key
    if getattr(args, "no_counts", False):
        fit_kw["counts"] = False
    if getattr(args, "checkpoint_every", None) or getattr(args, "resume", False):
        fit_kw["checkpoint_dir"] = _checkpoint_dir(args)
        fit_kw["checkpoint_every"] = args.checkpoint_every or 1
        fit_kw["resume"] = bool(args.resume)
    return model.fit(adata, **fit_kw)


def _checkpoint_dir(args) -> Path:
    if getattr(args, "checkpoint_dir", None):
        return Path(args.checkpoint_dir)
    out = Path(args.out)
    return out.with_name(out.name + ".checkpoint")


def _check_args(args) -> None:
    """Validate the options before reading data or training (each error names its option)."""
    from ._settings import resolve_device
    from ._validate import SEED_LIMIT, SigelInputError

    for opt, v, lo in (("--threads", args.threads, 1), ("--epochs", args.epochs, 1),
                       ("--n-contexts", args.n_contexts, 1), ("--n-genes", args.n_genes, 1),
                       ("--checkpoint-every", getattr(args, "checkpoint_every", None), 1)):
        if v is not None and v < lo:
            raise SigelInputError(f"{opt} must be at least {lo}; got {v}")
    if not 0 <= args.seed < SEED_LIMIT:
        raise SigelInputError(f"--seed must be in [0, 2**32); got {args.seed}")
    try:
        resolve_device(args.device)
    except SigelInputError as e:
        raise SigelInputError(f"--device: {e}") from None
    check_out(Path(args.out), args.overwrite)


def _read_input(path: str):
    import anndata as ad

    from ._validate import SigelInputError

    src = Path(path)
    if not src.exists():
        raise SigelInputError(f"input file not found: {src}")
    if not src.is_file():
        raise SigelInputError(f"input {str(src)!r} is not a file")
    try:
        return ad.read_h5ad(src)
    except Exception as e:  # h5py/anndata raise many types for a file that is not an AnnData
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SigelInputError(f"could not read {str(src)!r} as an .h5ad AnnData file: {msg}") from None


def _check_keys(adata, args) -> None:
    from ._validate import SigelInputError

    lib = getattr(args, "library_size_key", None)
    if lib and lib not in adata.obs:
        raise SigelInputError(f"--library-size-key {lib!r} is not a column of adata.obs; "
                              f"available: {list(adata.obs.columns)[:20]}")
    layer = getattr(args, "layer", None)
    if layer and layer not in adata.layers:
        raise SigelInputError(f"--layer {layer!r} is not in adata.layers; available: {list(adata.layers.keys())}")
    sk = getattr(args, "spatial_key", None)
    if sk and sk not in adata.obsm:
        raise SigelInputError(f"--spatial-key {sk!r} is not in adata.obsm; available: {list(adata.obsm.keys())}")


def _common(p):
    p.add_argument("--out", required=p.prog.endswith("train"), default="demo_out",
                   help="output folder (must be new or empty, or hold an earlier run's results with --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (only when it holds nothing else)")
    p.add_argument("--epochs", type=int, default=None, help="epoch limit (default: the model's)")
    p.add_argument("--n-contexts", type=int, default=None, help="number of contexts K (default: from the gene count)")
    p.add_argument("--seed", type=int, default=0, help="random seed in [0, 2**32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo = not p.prog.endswith("train")
    p.add_argument("--n-genes", type=int, default=1500 if demo else None,
                   help="embed only the N genes with the highest Moran's I (default: all genes"
                        + ("; the demo uses 1500 to finish in minutes on a laptop CPU)" if demo else ")"))
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="save a training checkpoint every N epochs (into --checkpoint-dir)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (default: OUT.checkpoint next to --out); removed after success")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --checkpoint-dir (same data and options)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _without_nproc(argv: list) -> list:
    """``argv`` without its ``--nproc N`` (or ``--nproc=N``) option."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


class _Terminated(Exception):
    """Raised in the main thread when SIGTERM arrives, so that cleanup runs."""


def _on_sigterm(signum, frame):
    raise _Terminated(signum)


def main(argv=None) -> int:
    """Entry point of the ``sigel`` console script."""
    parser = argparse.ArgumentParser(prog="sigel", description="SIGEL gene embeddings for spatial transcriptomics")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit a model on an .h5ad file (spots x genes, raw counts)")
    t.add_argument("input", help="AnnData .h5ad file")
    t.add_argument("--layer", default=None, help="layer with counts (default X)")
    t.add_argument("--library-size-key", default=None, help="obs column with library sizes (e.g. sum_umi)")
    t.add_argument("--spatial-key", default=None, help="obsm key with the spot coordinates (default: spatial)")
    t.add_argument("--no-counts", action="store_true",
                   help="the matrix does not hold raw counts: use its values as they are (no integer check)")
    t.add_argument("--nproc", type=int, default=1,
                   help="processes for data-parallel training (relaunches itself with torchrun; "
                        "one per GPU on a GPU machine; default 1)")
    _common(t)
    d = sub.add_parser("demo", help="fit on the bundled mouse olfactory bulb and write a report")
    _common(d)
    # the demo is reproducible: rerunning it replaces its own earlier results (never a folder with other files)
    d.set_defaults(overwrite=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    from . import datasets
    from ._validate import SigelInputError
    from .train import distributed

    try:
        if args.cmd == "train" and args.nproc < 1:
            raise SigelInputError(f"--nproc must be at least 1; got {args.nproc}")
        if distributed.is_main_process():
            _check_args(args)
    except SigelInputError as e:
        print(f"sigel: error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "train" and args.nproc > 1 and not distributed.distributed_requested():
        # relaunch this same command in `nproc` processes; each fit detects the torchrun environment
        return int(distributed.launch(_without_nproc(argv), args.nproc))

    t0 = time.perf_counter()
    out = Path(args.out)
    tmp = None
    old_handler = None
    if hasattr(signal, "SIGTERM") and _in_main_thread():
        old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.cmd == "train":
            adata = _read_input(args.input)
            _check_keys(adata, args)
            title = f"sigel: {Path(args.input).name}"
        else:
            adata = datasets.mouse_olfactory_bulb()
            title = "sigel demo: mouse olfactory bulb (Ståhl et al. 2016)"
        model = _fit(adata, args)
        if not distributed.is_main_process():  # under torchrun: rank 0 writes the outputs
            return 0
        check_out(out, args.overwrite)  # again: something may have appeared there while training
        out.parent.mkdir(parents=True, exist_ok=True)
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        write_outputs(model, tmp, title=title)
        publish(tmp, out)
        tmp = None
        paths = {p: str(out / p) for p in OUTPUT_NAMES}
        if getattr(args, "checkpoint_every", None) or getattr(args, "resume", False):
            from .train.checkpoint import remove_checkpoint

            remove_checkpoint(_checkpoint_dir(args))
    except SigelInputError as e:
        print(f"sigel: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sigel: error: {e}", file=sys.stderr)
        return 2
    except _Terminated:
        print("sigel: terminated; --out was left as it was", file=sys.stderr)
        return 128 + int(signal.SIGTERM)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if tmp is not None:
            _discard(tmp)
    print(f"{model!r}\nfinished in {time.perf_counter() - t0:.0f} s; wrote:")
    for k, v in paths.items():
        print(f"  {v}")
    return 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _discard(tmp: Path) -> None:
    """Remove an unfinished temporary output folder (it only holds what this run wrote)."""
    import shutil

    if tmp.name.startswith(".") and ".tmp-" in tmp.name:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
