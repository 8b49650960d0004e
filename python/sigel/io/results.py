"""Results on disk: embeddings and memberships in HDF5, written chunk by chunk.

For atlas-size jobs the per-gene results need not sit in memory:

* :func:`write_results_h5` stores a fitted model's results (what
  ``SIGEL.fit(..., out_file=...)`` writes, on rank 0 only under ``torchrun``);
* :func:`transform_to_h5` embeds the genes of new data in batches, as
  ``SIGEL.transform`` does, and streams the vectors and memberships into
  the file block by block, so memory is bounded by one batch of dense
  images, the sparse inputs and the ``(G, D)`` vectors;
* :func:`read_results_h5` reads a file back into DataFrames (or only some
  rows, lazily through h5py).

File layout (all datasets chunked along genes and gzip-compressed)::

    /embeddings    float32 (G, D)
    /memberships   float32 (G, K)
    /context       int64   (G,)     hard context
    /confidence    float32 (G,)     its membership
    /genes         str     (G,)
    /samples       str     (G,)     only for multi-sample results
    /mixture/{log_pi,mu,var,nu}     the fitted mixture
    attrs: format='sigel-results', version, n_genes, embed_dim, n_contexts
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._validate import SigelInputError

__all__ = ["write_results_h5", "transform_to_h5", "read_results_h5"]

FORMAT = "sigel-results"


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency of anndata
        raise SigelInputError("writing HDF5 results needs h5py (pip install h5py)") from e
    return h5py


def _create(path, n: int, d: int, k: int, samples: bool, chunk: int, mixture=None, overwrite: bool = True):
    h5py = _h5py()
    path = Path(path)
    if path.exists() and not overwrite:
        raise SigelInputError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    f = h5py.File(path, "w")
    c = max(min(int(chunk), max(n, 1)), 1)
    opts = dict(compression="gzip", compression_opts=4, shuffle=True)
    f.create_dataset("embeddings", shape=(n, d), dtype="f4", chunks=(c, d) if n else None, **(opts if n else {}))
    f.create_dataset("memberships", shape=(n, k), dtype="f4", chunks=(c, k) if n else None, **(opts if n else {}))
    f.create_dataset("context", shape=(n,), dtype="i8")
    f.create_dataset("confidence", shape=(n,), dtype="f4")
    sdt = h5py.string_dtype()
    f.create_dataset("genes", shape=(n,), dtype=sdt)
    if samples:
        f.create_dataset("samples", shape=(n,), dtype=sdt)
    if mixture is not None:
        g = f.create_group("mixture")
        for name, t in mixture.state_dict().items():
            g.create_dataset(name, data=t.detach().cpu().numpy())
    from .._version import __version__

    f.attrs.update(format=FORMAT, version=__version__, n_genes=n, embed_dim=d, n_contexts=k)
    return f


def _write_block(f, start: int, emb: np.ndarray, mem: np.ndarray, genes, samples=None) -> None:
    stop = start + len(emb)
    mem = np.asarray(mem, dtype=np.float64)
    f["embeddings"][start:stop] = np.asarray(emb, dtype=np.float32)
    f["memberships"][start:stop] = mem.astype(np.float32)
    f["context"][start:stop] = mem.argmax(1) if len(mem) else np.zeros(0, np.int64)
    f["confidence"][start:stop] = mem.max(1).astype(np.float32) if len(mem) else np.zeros(0, np.float32)
    f["genes"][start:stop] = np.asarray([str(g) for g in genes], dtype=object)
    if samples is not None:
        f["samples"][start:stop] = np.asarray([str(s) for s in samples], dtype=object)


def write_results_h5(path, model, *, chunk_size: int = 16384, overwrite: bool = True) -> Path:
    """Write a fitted model's per-gene results and mixture to an HDF5 file.

    Parameters
    ----------
    path
        File to create.
    model
        A trained :class:`sigel.SIGEL` (single- or multi-sample).
    chunk_size
        Genes per HDF5 chunk / per write.
    overwrite
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import sigel
    >>> m = sigel.SIGEL(epochs=3).fit(sigel.datasets.synthetic_tissue(100))   # doctest: +SKIP
    >>> write_results_h5("res.h5", m)                                 # doctest: +SKIP
    """
    if not getattr(model, "is_trained", False):
        raise SigelInputError("the model is not trained; fit it before writing results")
    emb, mem = model.embeddings_, model.memberships_
    idx = emb.index
    multi = isinstance(idx, pd.MultiIndex)
    genes = idx.get_level_values("gene") if multi else idx
    samples = idx.get_level_values("sample") if multi else None
    n, d, k = emb.shape[0], emb.shape[1], mem.shape[1]
    E, M = emb.to_numpy(np.float32), mem.to_numpy(np.float64)
    with _create(path, n, d, k, multi, chunk_size, model.mixture_, overwrite) as f:
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            _write_block(f, s, E[s:e], M[s:e], genes[s:e], None if samples is None else samples[s:e])
    return Path(path)


def transform_to_h5(model, adata_or_images, path, *, genes=None, batch_size: int | None = None,
                    device=None, draws: int | str | None = None, overwrite: bool = True,
                    progress: bool | None = None, **image_options) -> Path:
    """Embed new data with a trained model, streaming the memberships to HDF5.

    The vectors are :meth:`sigel.SIGEL.transform`'s, computed the same way
    (:meth:`sigel.SIGEL.embed_images`: batches of genes densified and
    embedded, averaged over the model's depth-matched draws where it reads
    them). Only the ``(G, D)`` vectors are held (4 bytes x G x D: 1 MB for
    8,000 genes at D = 32); the ``(G, K)`` memberships under the fitted
    mixture are computed, written and dropped block by block.

    Parameters
    ----------
    model
        A trained :class:`sigel.SIGEL`.
    adata_or_images
        AnnData (images are built with the model's saved options) or
        :class:`sigel.GeneImages`.
    path
        HDF5 file to create.
    genes
        Optional subset of genes.
    batch_size
        Genes per forward pass (default: the model's ``embed_batch_size``).
    device
        Torch device (default: where the model is).
    draws
        Depth-matched draws averaged per gene (:meth:`sigel.SIGEL.embed_images`;
        default the model's ``rarefy_draws``).
    overwrite
        Replace an existing file.
    progress
        Progress bar over the blocks written (``None``: ``sigel.settings.show_progress()``).
    **image_options
        Overrides of the saved image options.

    Returns
    -------
    pathlib.Path
    """
    import torch
    from tqdm.auto import tqdm

    from .._settings import settings

    model._require_trained("transform_to_h5")
    images = model.images_for(adata_or_images, genes=genes, **image_options)
    Z = model.embed_images(images, batch_size=batch_size, device=device, draws=draws)
    n, d, k = images.n_genes, model.embed_dim, model.n_contexts_
    block = max(int(batch_size or model.init_params_["embed_batch_size"]), 1024)
    mix = model.mixture_model_
    with _create(path, n, d, k, False, block, model.mixture_, overwrite) as f:
        for s in tqdm(range(0, n, block), disable=not settings.show_progress(progress), desc="write", unit="block"):
            rows = np.arange(s, min(s + block, n))
            with torch.no_grad():
                r = mix.predict_proba(torch.from_numpy(Z[rows]).to(mix.params.mu.device, mix.params.mu.dtype))
            _write_block(f, s, Z[rows], r.double().cpu().numpy(), images.genes[rows])
    return Path(path)


def read_results_h5(path, *, rows=None) -> dict:
    """Read results written by :func:`write_results_h5` / :func:`transform_to_h5`.

    Parameters
    ----------
    path
        The HDF5 file.
    rows
        Optional slice or integer array of rows to read (default all).

    Returns
    -------
    dict
        ``embeddings`` and ``memberships`` (DataFrames indexed by gene, or by
        ``(sample, gene)``), ``contexts`` (``context``, ``confidence``) and
        ``mixture`` (dict of arrays).
    """
    h5py = _h5py()
    sel = slice(None) if rows is None else rows
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise SigelInputError(f"{str(path)!r} is not a sigel results file")
        genes = pd.Index([g.decode() if isinstance(g, bytes) else str(g) for g in f["genes"][sel]])
        if "samples" in f:
            smp = [s.decode() if isinstance(s, bytes) else str(s) for s in f["samples"][sel]]
            index = pd.MultiIndex.from_arrays([smp, genes], names=["sample", "gene"])
        else:
            index = pd.Index(genes, name="gene")
        emb = f["embeddings"][sel]
        mem = f["memberships"][sel]
        ctx = pd.DataFrame({"context": f["context"][sel], "confidence": f["confidence"][sel]}, index=index)
        mixture = {k: f["mixture"][k][()] for k in f["mixture"]} if "mixture" in f else {}
    return {
        "embeddings": pd.DataFrame(emb, index=index, columns=[f"dim_{i}" for i in range(emb.shape[1])]),
        "memberships": pd.DataFrame(mem, index=index, columns=[f"context_{i}" for i in range(mem.shape[1])]),
        "contexts": ctx,
        "mixture": mixture,
    }
