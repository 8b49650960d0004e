"""Nearest genes in the embedding (co-expression retrieval by cosine similarity)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._settings import logger, settings
from .._validate import SigelInputError, assert_positive
from ._genes import GeneMapper, embedding_frame, report_unmapped, symbol_series, unit_rows


def neighbors(model, genes=None, k: int = 10, *, gene_symbols=None, adata=None, include_self: bool = False,
              center: bool = True, batch_size: int = 1024, progress: bool | None = None) -> pd.DataFrame:
    """The ``k`` genes with the most similar embedding (cosine) to each query gene.

    Queries are processed in batches of ``batch_size`` against all embedded
    genes (memory ``batch_size x n_genes``), so the full genes x genes
    similarity matrix is never formed.

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`, an AnnData with ``varm['sigel']``, or a
        genes x D embedding DataFrame.
    genes
        One gene name or a list of names (embedded ids, or symbols when
        ``gene_symbols`` is given). ``None`` queries every embedded gene.
    k
        Number of neighbours per query (capped at the number of other genes).
    gene_symbols
        Optional identifier mapping: the name of a ``var`` column holding
        symbols (of ``adata``, or of ``model`` when it is an AnnData), or a
        mapping {embedded id: symbol}. Queries may then be symbols, and the
        table gains ``query_symbol`` / ``neighbor_symbol`` columns.
    adata
        AnnData whose ``var`` holds the ``gene_symbols`` column.
    include_self
        Keep the query itself (cosine 1, rank 1) in its list.
    center
        Remove the mean gene vector before taking cosines (default). Gene
        vectors share a large common component, so raw cosines all sit near
        1; the refinement's contrastive loss works on centred vectors too,
        so centred cosines are the similarities the model was trained on.
    batch_size
        Queries per batch.
    progress
        Show a progress bar (``None``: `sigel.settings`).

    Returns
    -------
    pandas.DataFrame
        One row per (query, neighbour), sorted by query then rank, with
        columns ``query``, ``neighbor``, ``cosine``, ``rank`` (1 = most
        similar) and, with ``gene_symbols``, ``query_symbol`` and
        ``neighbor_symbol``. ``attrs['n_unmapped']`` counts query names that
        matched no embedded gene (they are skipped with a warning; an error
        when none match).

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> emb = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 8)),
    ...                    index=[f"g{i}" for i in range(50)])
    >>> tab = sigel.tl.neighbors(emb, ["g1", "g2"], k=5)
    >>> tab.shape
    (10, 4)
    """
    from tqdm.auto import tqdm

    emb = embedding_frame(model)
    assert_positive("k", k)
    assert_positive("batch_size", batch_size)
    mapper = GeneMapper(emb.index, symbol_series(gene_symbols, emb.index, adata=adata, model=model))
    if genes is None:
        qids = emb.index.to_numpy(dtype=object)
        n_unmapped = 0
    else:
        names = [str(g) for g in np.atleast_1d(np.asarray(genes, dtype=object))]
        if not names:
            raise SigelInputError("`genes` is empty")
        ids = mapper.to_ids(names)
        miss = pd.isna(ids)
        n_unmapped = int(miss.sum())
        if n_unmapped == len(names):
            raise SigelInputError(
                f"none of the {len(names)} query genes is embedded (e.g. {names[:5]}); "
                "check the identifiers or pass gene_symbols="
            )
        report_unmapped("neighbors", n_unmapped, len(names), np.asarray(names, dtype=object)[miss])
        qids = pd.unique(ids[~miss])
    G = emb.shape[0]
    kk = int(min(k, G if include_self else G - 1))
    X = emb.to_numpy(np.float64)
    X = unit_rows(X - X.mean(0) if center else X)
    qidx = emb.index.get_indexer(qids)
    all_nb, all_cos = [], []
    starts = range(0, len(qidx), int(batch_size))
    for s in tqdm(starts, disable=not settings.show_progress(progress), desc="neighbors"):
        b = qidx[s:s + int(batch_size)]
        S = X[b] @ X.T                          # (B, G)
        if not include_self:
            S[np.arange(len(b)), b] = -np.inf
        part = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        vals = np.take_along_axis(S, part, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        all_nb.append(np.take_along_axis(part, order, 1))
        all_cos.append(np.take_along_axis(vals, order, 1))
    nb = np.vstack(all_nb)
    cos = np.vstack(all_cos)
    out = pd.DataFrame({
        "query": np.repeat(np.asarray(qids, dtype=object), kk),
        "neighbor": emb.index.to_numpy(dtype=object)[nb.ravel()],
        "cosine": np.clip(cos.ravel(), -1.0, 1.0),
        "rank": np.tile(np.arange(1, kk + 1), len(qids)),
    })
    if mapper.symbols is not None:
        out["query_symbol"] = mapper.label(out["query"].to_numpy())
        out["neighbor_symbol"] = mapper.label(out["neighbor"].to_numpy())
    out.attrs["n_unmapped"] = n_unmapped
    logger.info(f"neighbors: {len(qids)} queries x {kk} neighbours")
    return out
