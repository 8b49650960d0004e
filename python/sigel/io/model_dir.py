"""Saved model directories, and a fitted model's results written into an AnnData.

A saved :class:`sigel.SIGEL` is a directory of three files, no pickles:

* ``config.json``: the hyper-parameters, the values resolved at fit time,
  the image options, the gene names, the training history and versions;
* ``weights.safetensors``: the autoencoder's and the mixture's tensors and
  the results (``results.embeddings``, ``results.memberships``);
* ``sigel-manifest.json``: written last, the files the save wrote with
  their SHA-256, so that a directory whose save was interrupted (or that
  was changed afterwards) is refused rather than loaded with mismatched parts.

:func:`save_model` and :func:`load_model` do the work behind
:meth:`SIGEL.save <sigel.SIGEL.save>` and :meth:`SIGEL.load
<sigel.SIGEL.load>`; :func:`write_to_anndata` the work behind
:meth:`SIGEL.write_to <sigel.SIGEL.write_to>`.
"""
from __future__ import annotations

import inspect
import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from .._settings import logger, resolve_device
from .._validate import SigelInputError, jsonable
from .._version import __version__
from ..data.setup import DataSetup

__all__ = ["save_model", "load_model", "write_to_anndata", "jsonable", "FORMAT", "FORMAT_VERSION",
           "CONFIG_FILE", "WEIGHTS_FILE", "MANIFEST_FILE"]

FORMAT = "sigel-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "sigel-manifest.json"
MANIFEST_FORMAT = "sigel-model-files"


# ------------------------------------------------------------------ helpers
def _sha256(file: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(path: Path, files: list) -> None:
    """Write the list of files a save wrote (with their SHA-256), atomically."""
    manifest = {"format": MANIFEST_FORMAT, "files": {f: _sha256(path / f) for f in files}}
    tmp = path / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path / MANIFEST_FILE)


def _read_manifest(path: Path):
    """The manifest's ``{file: sha256}`` (``None`` when there is none); refuses a corrupt one."""
    f = path / MANIFEST_FILE
    if not f.exists():
        return None
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise SigelInputError(f"{str(f)!r} is corrupt (not valid JSON): {e}") from None
    files = m.get("files") if isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise SigelInputError(f"{str(f)!r} is not a sigel manifest")
    for name in files:
        if Path(name).name != name or name in ("", ".", ".."):
            raise SigelInputError(f"{str(f)!r} lists a file outside the model directory: {name!r}")
    return files


def _check_config_types(cfg: dict, cfg_file: Path) -> None:
    """Refuse a config.json whose entries have the wrong types, naming the entry."""
    def fail(what, v, expected):
        raise SigelInputError(f"{str(cfg_file)!r} is corrupt: {what} must be {expected}; got {v!r}")

    for key in ("init_params", "resolved", "image_options"):
        if not isinstance(cfg[key], dict):
            fail(f"'{key}'", type(cfg[key]).__name__, "an object")
    if cfg.get("setup") is not None and not isinstance(cfg["setup"], dict):
        fail("'setup'", type(cfg["setup"]).__name__, "an object")
    genes = cfg["genes"]
    if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
        fail("'genes'", genes if not isinstance(genes, list) else "a list with non-strings", "a list of names")
    res = cfg["resolved"]
    for key in ("patch_size", "n_contexts"):
        v = res.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            fail(f"resolved.{key}", v, "a positive integer")
    for key in ("epochs", "pretrain_epochs"):
        v = res.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            fail(f"resolved.{key}", v, "an integer")
    v = res.get("mixture_prior_scale")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        fail("resolved.mixture_prior_scale", v, "a number")
    v = cfg.get("epochs_run")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        fail("'epochs_run'", v, "a non-negative integer")
    for key in ("history", "fit_params"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            fail(f"'{key}'", type(cfg[key]).__name__, "an object")
    h = cfg.get("history") or {}
    if h and (not all(isinstance(c, list) for c in h.values()) or len({len(c) for c in h.values()}) > 1):
        fail("'history'", "columns of different lengths", "columns of equal length")
    samples = cfg.get("samples")
    if samples is not None and not isinstance(samples, list):
        fail("'samples'", type(samples).__name__, "a list")


def _owned_files(path: Path) -> list:
    """Files of ``path`` that a previous :meth:`SIGEL.save` wrote; refuses a directory that is not a saved model."""
    files = _read_manifest(path)
    if files is not None:
        return list(files) + [MANIFEST_FILE]
    cfg = path / CONFIG_FILE
    try:
        is_model = json.loads(cfg.read_text()).get("format") == FORMAT if cfg.exists() else False
    except (OSError, ValueError, AttributeError):
        is_model = False
    if not is_model:
        raise SigelInputError(f"refusing to overwrite {str(path)!r}: it is not empty and holds no saved SIGEL "
                              "model (no sigel manifest); choose another directory")
    return [CONFIG_FILE, WEIGHTS_FILE]  # saved before manifests existed: only its two files


def _history_dict(history) -> dict:
    """A history DataFrame as ``{column: list}`` (``{}`` for none)."""
    return {c: history[c].tolist() for c in history.columns} if history is not None else {}


def _versions() -> dict:
    import torch

    return {"sigel": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


# --------------------------------------------------------------------- save
def _prepare_dir(path: Path, overwrite: bool) -> list:
    """Check (and create) the target directory; returns the files of a previous save there."""
    old_files: list = []
    if path.exists():
        if not path.is_dir():
            raise SigelInputError(f"{str(path)!r} exists and is not a directory")
        if any(path.iterdir()):
            if not overwrite:
                raise SigelInputError(f"{str(path)!r} already exists; pass overwrite=True to replace it")
            old_files = _owned_files(path)
    path.mkdir(parents=True, exist_ok=True)
    return old_files


def _model_tensors(model) -> dict:
    """The tensors of ``weights.safetensors``: ``mae.*``, ``mixture.*`` and ``results.*``."""
    tensors = {f"mae.{k}": v.detach().cpu().contiguous().clone() for k, v in model.module_.state_dict().items()}
    tensors.update({f"mixture.{k}": v.detach().cpu().contiguous() for k, v in model.mixture_.state_dict().items()})
    import torch

    tensors["results.embeddings"] = torch.from_numpy(model.embeddings_.to_numpy(np.float32).copy())
    tensors["results.memberships"] = torch.from_numpy(model.memberships_.to_numpy(np.float64).copy())
    return tensors


def _model_config(model) -> dict:
    """The contents of ``config.json`` (before :func:`jsonable`)."""
    mix = model.mixture_model_
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": "SIGEL",
        "init_params": model.init_params_,
        "resolved": {"patch_size": model.patch_size_, "n_contexts": model.n_contexts_,
                     "embed_dim": model.embed_dim, "epochs": model.epochs_,
                     "pretrain_epochs": model.pretrain_epochs_, "mixture_prior_scale": mix.var_prior_scale_},
        "image_options": model.image_options_,
        "setup": model.setup_.to_dict() if model.setup_ is not None else None,
        "fit_params": model.fit_params_,
        "genes": [str(g) for g in model.embeddings_.index.get_level_values(-1)],
        "history": _history_dict(model.history_),
        "stop_reason": model.stop_reason_,
        "epochs_run": model.epochs_run_,
        "fit_seconds": model.fit_seconds_,
        "device_trained": model.device_,
        "versions": _versions(),
        "manifest": MANIFEST_FILE,
    }
    if isinstance(model.embeddings_.index, pd.MultiIndex):  # multi-sample: every row's sample
        config["samples"] = [str(x) for x in model.embeddings_.index.get_level_values("sample")]
    return config


def _write_files(path: Path, tensors: dict, config: dict, save_file) -> list:
    """Write the weights and the config under temporary names, then rename; returns the names written."""
    manifest_path = path / MANIFEST_FILE
    if manifest_path.exists():
        manifest_path.unlink()  # an interrupted save then reads as unfinished, not as the old model
    tmp_w, tmp_c = path / (WEIGHTS_FILE + ".tmp"), path / (CONFIG_FILE + ".tmp")
    try:
        save_file(tensors, str(tmp_w))
        with open(tmp_c, "w") as fh:
            json.dump(jsonable(config), fh, indent=1)
        os.replace(tmp_w, path / WEIGHTS_FILE)
        os.replace(tmp_c, path / CONFIG_FILE)
    finally:
        for t in (tmp_w, tmp_c):
            if t.exists():
                t.unlink()
    return [CONFIG_FILE, WEIGHTS_FILE]


def save_model(model, path, *, overwrite: bool = False, write_manifest=None) -> Path:
    """Save a trained model to a directory (the work behind :meth:`sigel.SIGEL.save`).

    Writes ``config.json`` and ``weights.safetensors`` under temporary
    names, renames them, removes the files of a previous save there that
    this one did not rewrite, and writes the manifest last.

    Parameters
    ----------
    model
        A trained :class:`sigel.SIGEL`.
    path
        Directory to create (or an existing empty one).
    overwrite
        Replace a model saved there before. Only the files listed in its
        manifest (or, for a model saved without one, its ``config.json`` and
        ``weights.safetensors``) are replaced; nothing else in the directory
        is removed. A non-empty directory that does not hold a saved SIGEL
        model is refused.
    write_manifest
        The function ``(path, files)`` that writes the manifest (default:
        this module's ``_write_manifest``). :meth:`sigel.SIGEL.save` passes
        the one named in :mod:`sigel._model`, so that replacing it there
        (e.g. to simulate a save interrupted before its manifest) takes
        effect.

    Returns
    -------
    pathlib.Path
        The directory.

    Raises
    ------
    SigelInputError
        Untrained model, a path that is a file, or a non-empty directory
        without ``overwrite=True`` (or that holds no saved model).
    """
    from safetensors.torch import save_file

    model._require_trained("save")
    path = Path(path)
    old_files = _prepare_dir(path, overwrite)
    tensors = _model_tensors(model)
    config = _model_config(model)
    written = _write_files(path, tensors, config, save_file)
    for name in old_files:  # files of the previous save that this one did not rewrite
        if name not in written and (path / name).is_file():
            (path / name).unlink()
    (write_manifest or _write_manifest)(path, written)
    logger.info("saved model to %s", path)
    return path


# --------------------------------------------------------------------- load
def _read_config(path: Path) -> dict:
    """Check the directory, its ``config.json`` and its manifest; returns the config."""
    if not path.exists():
        raise SigelInputError(f"no saved model at {str(path)!r}: the path does not exist")
    if not path.is_dir():
        raise SigelInputError(f"{str(path)!r} is not a directory; a saved SIGEL model is a directory")
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_file.exists():
        raise SigelInputError(f"{str(path)!r} has no {CONFIG_FILE}: not a saved SIGEL model")
    try:
        with open(cfg_file) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as e:
        raise SigelInputError(f"{str(cfg_file)!r} is corrupt (not valid JSON): {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise SigelInputError(f"{str(path)!r} is not a saved SIGEL model (config.json has no "
                              f"'format': {FORMAT!r})")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise SigelInputError(f"{str(path)!r} was saved by a newer sigel (format version "
                              f"{cfg.get('format_version')}); upgrade sigel to load it")
    required = ("init_params", "resolved", "genes", "image_options")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise SigelInputError(f"{str(cfg_file)!r} is incomplete: missing {missing}")
    if not w_file.exists():
        raise SigelInputError(f"{str(path)!r} has no {WEIGHTS_FILE}: the weights are missing")
    manifest = _read_manifest(path)
    if manifest is None and cfg.get("manifest"):
        raise SigelInputError(f"{str(path)!r} has no {MANIFEST_FILE}: its save did not finish")
    for name, digest in (manifest or {}).items():
        if not (path / name).is_file() or _sha256(path / name) != digest:
            raise SigelInputError(f"{str(path / name)!r} is missing or corrupt: it does not match "
                                  f"{MANIFEST_FILE} (the directory was changed or its save did not finish)")
    _check_config_types(cfg, cfg_file)
    return cfg


def _read_weights(w_file: Path) -> dict:
    """The tensors of ``weights.safetensors`` (on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(w_file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SigelInputError(f"{str(w_file)!r} is corrupt: {e}") from None


def _new_model(model_class, cfg: dict, cfg_file: Path):
    """An untrained ``model_class`` built from the saved hyper-parameters."""
    known = set(inspect.signature(model_class.__init__).parameters) - {"self"}
    params = {k: v for k, v in cfg["init_params"].items() if k in known}
    # models saved before per-image input standardisation existed were trained on raw values
    params.setdefault("input_norm", None)
    # models saved before the scaffold graph was an option used the box-filter correlation graph
    params.setdefault("scaffold_graph", "box")
    # models saved before the weight average existed were trained without one
    params.setdefault("ema_decay", 0.0)
    # models saved before the two-layer patch embedding existed embed each patch with one linear map
    params.setdefault("patch_stem", False)
    # every saved config records its heads; one without them predates the one-head default
    params.setdefault("n_heads", 4)
    try:
        return model_class(**params)
    except (TypeError, SigelInputError) as e:
        raise SigelInputError(f"{str(cfg_file)!r} holds invalid hyper-parameters: {e}") from None


def _restore_parts(model, tensors: dict, res: dict, w_file: Path):
    """The autoencoder, the mixture and the result arrays from the saved tensors."""
    try:
        module = model._build_module(int(res["patch_size"]))
        mae_sd = {k[4:]: v for k, v in tensors.items() if k.startswith("mae.")}
        module.load_state_dict(mae_sd, strict=True)
        from ..model.mixture import MixtureParams

        mix = model._build_mixture(int(res["n_contexts"]), 0)
        mix.params = MixtureParams.from_state_dict({k[8:]: v for k, v in tensors.items()
                                                    if k.startswith("mixture.")})
        mix.var_prior_scale_ = res.get("mixture_prior_scale")
        emb = tensors["results.embeddings"].numpy()
        mem = tensors["results.memberships"].numpy()
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SigelInputError(f"{str(w_file)!r} does not match {CONFIG_FILE}: {msg}") from None
    return module, mix, emb, mem


def _check_parts(path: Path, w_file: Path, tensors: dict, mix, emb, mem, n_genes: int, K: int, D: int) -> None:
    """Refuse results or a mixture whose shapes disagree with the config, or non-finite tensors."""
    import torch

    if emb.shape != (n_genes, D) or mem.shape[0] != n_genes:
        raise SigelInputError(f"{str(w_file)!r} does not match {CONFIG_FILE}: result shapes "
                              f"{tuple(emb.shape)} / {tuple(mem.shape)} for {n_genes} genes")
    p = mix.params
    if p.mu.shape != (K, D) or p.var.shape != p.mu.shape or p.log_pi.shape != (K,) \
            or p.nu.shape != (K,) or mem.ndim != 2 or mem.shape[1] != K:
        raise SigelInputError(
            f"{str(path)!r}: {CONFIG_FILE} says n_contexts={K} but the mixture has "
            f"{tuple(p.mu.shape)[0] if p.mu.ndim else '?'} components and the memberships "
            f"{mem.shape[1] if mem.ndim == 2 else '?'} columns")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
    bad += [k for k, v in tensors.items() if v.is_floating_point() and k not in ("mixture.nu", "mixture.log_pi")
            and bool(torch.isinf(v).any())]
    if bad:
        raise SigelInputError(f"{str(w_file)!r} holds NaN or infinite values in {sorted(set(bad))[:5]}")


def _result_index(cfg: dict, cfg_file: Path) -> pd.Index:
    """Row labels of the saved results: the genes, with their samples for a multi-sample model."""
    genes = cfg["genes"]
    samples = cfg.get("samples")
    if samples is None:
        return pd.Index(genes)
    if len(samples) != len(genes):
        raise SigelInputError(f"{str(cfg_file)!r} is corrupt: {len(samples)} sample labels for "
                              f"{len(genes)} genes")
    return pd.MultiIndex.from_arrays([pd.Index([str(x) for x in samples]), pd.Index(genes)],
                                     names=["sample", "gene"])


def load_model(path, *, model_class, device: str = "cpu"):
    """Load a model saved with :func:`save_model` (the work behind :meth:`sigel.SIGEL.load`).

    Parameters
    ----------
    path
        The directory.
    model_class
        The class to build, :class:`sigel.SIGEL` (given by the caller: this
        module sits below the model class in the package's layers).
    device
        Where to put the weights (default CPU; ``'auto'`` allowed).

    Returns
    -------
    sigel.SIGEL
        A trained model (``images_`` and ``graph_`` are ``None``).

    Raises
    ------
    SigelInputError
        Missing, corrupt or foreign directory, naming the problem.
    """
    path = Path(path)
    cfg = _read_config(path)
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    tensors = _read_weights(w_file)
    model = _new_model(model_class, cfg, cfg_file)
    res = cfg["resolved"]
    module, mix, emb, mem = _restore_parts(model, tensors, res, w_file)
    _check_parts(path, w_file, tensors, mix, emb, mem, len(cfg["genes"]), int(res["n_contexts"]), model.embed_dim)
    dev = resolve_device(device)
    model.module_ = module.to(dev).eval()
    mix.params = mix.params.to(dev)
    model.mixture_model_ = mix
    model.device_ = str(dev)
    model.patch_size_ = int(res["patch_size"])
    model.n_contexts_ = int(res["n_contexts"])
    model.epochs_ = res.get("epochs")
    model.pretrain_epochs_ = res.get("pretrain_epochs")
    model.setup_ = DataSetup.from_config(cfg)
    model.fit_params_ = dict(cfg.get("fit_params") or {})
    model.history_ = pd.DataFrame(cfg.get("history") or {})
    model.stop_reason_ = cfg.get("stop_reason")
    model.epochs_run_ = int(cfg.get("epochs_run") or 0)
    model.fit_seconds_ = cfg.get("fit_seconds")
    model._set_results(_result_index(cfg, cfg_file), emb, mem)
    return model


# ------------------------------------------------------------ AnnData writer
def _sample_rows(model, sample):
    """The embeddings, memberships and contexts frames to write (one sample's rows for a multi-sample model)."""
    emb_df, mem_df, ctx_df = model.embeddings_, model.memberships_, model.contexts_
    if isinstance(emb_df.index, pd.MultiIndex):
        names = model.sample_names_
        if sample is None:
            raise SigelInputError(f"this model was fitted on several samples; pass `sample=` (one of {names}) "
                                  "to say which sample `adata` holds")
        if str(sample) not in names:
            raise SigelInputError(f"`sample` {sample!r} is not one of the fitted samples {names}")
        emb_df, mem_df, ctx_df = (f.xs(str(sample), level="sample") for f in (emb_df, mem_df, ctx_df))
    elif sample is not None:
        raise SigelInputError("`sample` is only for multi-sample models; this model was fitted on one sample")
    return emb_df, mem_df, ctx_df


def _uns_entry(model, K: int, n_genes: int) -> dict:
    """The ``adata.uns[key_added]`` dict of :func:`write_to_anndata` (without ``sample``)."""
    mix = {k: v.detach().cpu().numpy() for k, v in model.mixture_.state_dict().items()}
    resolved = {"epochs": model.epochs_, "pretrain_epochs": model.pretrain_epochs_,
                "patch_size": model.patch_size_, "n_contexts": K}
    return {
        "params": jsonable({k: v for k, v in model.init_params_.items() if v is not None}),
        "image_options": jsonable({k: v for k, v in model.image_options_.items() if v is not None}),
        "resolved": jsonable({k: v for k, v in resolved.items() if v is not None}),
        "history": _history_dict(model.history_),
        "stop_reason": str(model.stop_reason_),
        "epochs_run": int(model.epochs_run_),
        "n_contexts": int(K),
        "n_genes": int(n_genes),
        "patch_size": int(model.patch_size_),
        "mixture": mix,
        "version": __version__,
    }


def write_to_anndata(model, adata, *, key_added: str = "sigel", sample: str | None = None):
    """Store a trained model's results in ``adata`` (the work behind :meth:`sigel.SIGEL.write_to`).

    Parameters
    ----------
    model
        A trained :class:`sigel.SIGEL`.
    adata, key_added, sample
        As in :meth:`sigel.SIGEL.write_to` (genes matched by name; genes not
        embedded get NaN rows / missing values).

    Returns
    -------
    sigel.SIGEL
        ``model``. The keys set are listed in :meth:`sigel.SIGEL.write_to`.
    """
    model._require_trained("write_to")
    emb_df, mem_df, ctx_df = _sample_rows(model, sample)
    var_names = pd.Index(adata.var_names.astype(str))
    pos = var_names.get_indexer(emb_df.index)
    ok = pos >= 0
    if not ok.any():
        raise SigelInputError("none of the embedded genes are in adata.var_names; was the model fitted on this data?")
    if (~ok).any():
        logger.warning("%d embedded genes are not in adata.var_names and were skipped", int((~ok).sum()))
    n, D, K = adata.n_vars, model.embed_dim, model.n_contexts_
    emb = np.full((n, D), np.nan, dtype=np.float32)
    emb[pos[ok]] = emb_df.to_numpy()[ok]
    mem = np.full((n, K), np.nan, dtype=np.float64)
    mem[pos[ok]] = mem_df.to_numpy()[ok]
    ctx = pd.array(np.full(n, pd.NA), dtype="Int64")
    ctx[pos[ok]] = ctx_df["context"].to_numpy()[ok]
    conf = np.full(n, np.nan)
    conf[pos[ok]] = ctx_df["confidence"].to_numpy()[ok]
    adata.varm[key_added] = emb
    adata.varm[f"{key_added}_contexts"] = mem
    adata.var[f"{key_added}_context"] = ctx
    adata.var[f"{key_added}_confidence"] = conf
    adata.uns[key_added] = _uns_entry(model, K, int(ok.sum()))
    if sample is not None:
        adata.uns[key_added]["sample"] = str(sample)
    logger.info("%s genes x %d dims -> adata.varm[%r]; contexts -> adata.var[%r], adata.uns[%r]",
                f"{int(ok.sum()):,}", D, key_added, f"{key_added}_context", key_added)
    return model
