"""Shared helpers of the gene-relation tasks: read embeddings / memberships
from a model, an AnnData or a table, and map gene identifiers (symbols or
Ensembl IDs) onto the embedded genes.

Private to ``sigel.tasks`` (used by ``contexts``, ``neighbors``,
``enrichment`` and ``interactions``).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .._keys import CONTEXT, EMBEDDING, MEMBERSHIPS
from .._settings import logger
from .._validate import SigelInputError


def _is_anndata(obj) -> bool:
    return hasattr(obj, "varm") and hasattr(obj, "var_names") and hasattr(obj, "obs")


def embedding_frame(model) -> pd.DataFrame:
    """Gene embeddings (genes x D, indexed by gene) from a model, AnnData or table.

    Accepts a fitted `sigel.SIGEL` (``embeddings_``), an AnnData with
    ``varm['sigel']`` (genes without an embedding, i.e. all-NaN rows, are
    dropped) or a DataFrame (genes x D).
    """
    if isinstance(model, pd.DataFrame):
        emb = model
    elif _is_anndata(model):
        if EMBEDDING not in model.varm:
            raise SigelInputError(
                f"No embedding in adata.varm[{EMBEDDING!r}]; run `sigel.SIGEL(...).fit(adata)` "
                "(or `runSIGEL()` in R) first, or pass the fitted model"
            )
        arr = np.asarray(model.varm[EMBEDDING], dtype=np.float64)
        emb = pd.DataFrame(arr, index=pd.Index(model.var_names.astype(str)))
        emb = emb.loc[np.isfinite(arr).all(axis=1)]
    elif hasattr(model, "embeddings_"):
        if not getattr(model, "is_trained", True) or getattr(model, "embeddings_", None) is None:
            raise SigelInputError("the SIGEL model is not fitted; call `.fit(adata)` first")
        emb = model.embeddings_
    else:
        raise SigelInputError(
            "`model` must be a fitted sigel.SIGEL, an AnnData with varm['sigel'] or a genes x D "
            f"DataFrame; got {type(model).__name__}"
        )
    if not isinstance(emb, pd.DataFrame):
        raise SigelInputError(f"embeddings must be a DataFrame indexed by gene; got {type(emb).__name__}")
    if emb.shape[0] < 2:
        raise SigelInputError(f"need at least 2 embedded genes; got {emb.shape[0]}")
    emb = emb.astype(np.float64)
    emb.index = pd.Index(emb.index.astype(str))
    if emb.index.has_duplicates:
        raise SigelInputError("the embedding has duplicated gene names")
    if not np.all(np.isfinite(emb.to_numpy())):
        raise SigelInputError("the embedding contains NaN or infinite values")
    return emb


def membership_frame(model) -> pd.DataFrame:
    """Soft context memberships (genes x K, rows sum to 1) from a model, AnnData or table."""
    if isinstance(model, pd.DataFrame):
        mem = model
    elif _is_anndata(model):
        if MEMBERSHIPS not in model.varm:
            raise SigelInputError(
                f"No memberships in adata.varm[{MEMBERSHIPS!r}]; run `sigel.SIGEL(...).fit(adata)` first"
            )
        arr = np.asarray(model.varm[MEMBERSHIPS], dtype=np.float64)
        cols = getattr(model.varm[MEMBERSHIPS], "columns", None)
        cols = list(cols) if cols is not None else [f"context_{k}" for k in range(arr.shape[1])]
        mem = pd.DataFrame(arr, index=pd.Index(model.var_names.astype(str)), columns=cols)
        mem = mem.loc[np.isfinite(arr).all(axis=1)]
    elif hasattr(model, "memberships_"):
        mem = model.memberships_
        if mem is None:
            raise SigelInputError("the SIGEL model is not fitted; call `.fit(adata)` first")
    else:
        raise SigelInputError(
            "`model` must be a fitted sigel.SIGEL, an AnnData with varm['sigel_contexts'] or a "
            f"genes x K membership DataFrame; got {type(model).__name__}"
        )
    mem = mem.astype(np.float64)
    mem.index = pd.Index(mem.index.astype(str))
    mem.columns = [str(c) for c in mem.columns]
    return mem


def hard_contexts(model) -> pd.Series:
    """Hard context label (str, e.g. ``'context_3'``) per gene: the arg-max membership."""
    if _is_anndata(model) and MEMBERSHIPS not in model.varm and CONTEXT in model.var:
        s = model.var[CONTEXT].dropna()
        lab = [f"context_{int(c)}" if _intlike(c) else str(c) for c in s]
        return pd.Series(lab, index=pd.Index(s.index.astype(str)), name="context")
    mem = membership_frame(model)
    return pd.Series(np.asarray(mem.columns)[mem.to_numpy().argmax(1)], index=mem.index, name="context")


def _intlike(x) -> bool:
    try:
        return float(x) == int(x)
    except (TypeError, ValueError):
        return False


def symbol_series(gene_symbols, genes: pd.Index, adata=None, model=None) -> pd.Series | None:
    """Map each embedded gene id to a symbol (``None`` when no mapping is asked for).

    ``gene_symbols`` is ``None``, the name of a ``var`` column (of ``adata``,
    or of ``model`` when it is an AnnData), or a mapping / Series from gene id
    to symbol.
    """
    if gene_symbols is None:
        return None
    if isinstance(gene_symbols, str):
        src = adata if adata is not None else (model if _is_anndata(model) else None)
        if src is None:
            raise SigelInputError(
                f"gene_symbols={gene_symbols!r} names a var column, but no AnnData was given; "
                "pass `adata=` or a mapping {gene id: symbol}"
            )
        if gene_symbols not in src.var:
            raise SigelInputError(
                f"gene_symbols {gene_symbols!r} not found in adata.var; available: {list(src.var.columns)[:20]}"
            )
        s = pd.Series(src.var[gene_symbols].to_numpy(), index=src.var_names.astype(str))
    elif isinstance(gene_symbols, pd.Series):
        s = gene_symbols.copy()
        s.index = s.index.astype(str)
    elif isinstance(gene_symbols, Mapping):
        s = pd.Series(dict(gene_symbols))
        s.index = s.index.astype(str)
    else:
        raise SigelInputError(
            "gene_symbols must be None, a var column name or a mapping {gene id: symbol}; "
            f"got {type(gene_symbols).__name__}"
        )
    s = s[~s.index.duplicated()].reindex(genes).astype(object)
    vals = [None if (v is None or (isinstance(v, float) and np.isnan(v)) or str(v) in ("", "nan", "NA", "None"))
            else str(v) for v in s.to_numpy()]
    return pd.Series(vals, index=s.index, dtype=object, name="symbol")


class GeneMapper:
    """Resolve gene names given as embedded ids or as symbols.

    Parameters
    ----------
    genes
        The embedded gene ids (the index of the embedding).
    symbols
        Optional Series id -> symbol (``None`` entries = unmapped).
    """

    def __init__(self, genes: pd.Index, symbols: pd.Series | None = None):
        self.genes = pd.Index(genes.astype(str))
        self.symbols = symbols
        if symbols is not None:
            ok = symbols.dropna()
            self.n_without_symbol = int(len(self.genes) - len(ok))
            # symbol -> first id carrying it (case-sensitive, then upper-case fallback)
            sym = pd.Series(ok.index.to_numpy(), index=ok.to_numpy())
            self._sym2id = sym[~sym.index.duplicated()]
            up = pd.Series(ok.index.to_numpy(), index=pd.Index(ok.to_numpy()).str.upper())
            self._up2id = up[~up.index.duplicated()]
        else:
            self.n_without_symbol = 0
            self._sym2id = self._up2id = None

    def to_ids(self, names) -> np.ndarray:
        """Embedded id for each name (``None`` where it cannot be mapped)."""
        names = pd.Index([str(n) for n in np.atleast_1d(np.asarray(names, dtype=object))])
        out = pd.Series(np.where(names.isin(self.genes), names, None), index=range(len(names)), dtype=object)
        if self._sym2id is not None:
            miss = out.isna().to_numpy()
            if miss.any():
                cand = self._sym2id.reindex(names[miss]).to_numpy()
                still = pd.isna(cand)
                if still.any():
                    cand[still] = self._up2id.reindex(names[miss][still].str.upper()).to_numpy()
                out[miss] = cand
        return out.to_numpy(dtype=object)

    def label(self, ids) -> np.ndarray:
        """Display name of embedded ids: the symbol when known, else the id."""
        ids = np.asarray(ids, dtype=object)
        if self.symbols is None:
            return ids
        sym = self.symbols.reindex(ids).to_numpy()
        return np.where(pd.isna(sym), ids, sym)


def report_unmapped(what: str, n_missing: int, n_total: int, examples=()) -> None:
    """Log how many input genes could not be matched to the embedding."""
    if n_missing:
        ex = list(examples)[:5]
        logger.warning(f"{what}: {n_missing} of {n_total} genes could not be mapped to embedded genes"
                       f"{' (e.g. ' + ', '.join(map(str, ex)) + ')' if ex else ''}")


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, n, out=np.zeros_like(X, dtype=np.float64), where=n > 0)
