"""Spot embeddings: every spot projected on the gene vectors.

A spot's vector is the expression-weighted mean of the gene vectors of the
genes it expresses, relative to the average spot: log-normalised expression
(library size to the median, ``log1p``), centred per gene, times the gene
embeddings, divided by the number of genes. Spots that express the genes of
one context point towards that context's vectors, so the result can be
clustered or drawn like any other spot representation (``obsm``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import _keys, tissue
from .._validate import SigelInputError
from ._genes import embedding_frame

__all__ = ["spot_embeddings"]


def spot_embeddings(model, adata, *, layer: str | None = None, library_size_key: str | None = None,
                    key_added: str | None = _keys.SPOTS) -> pd.DataFrame:
    """Spots x D embeddings: the spots' expression projected on the gene vectors.

    ``S = (X - mean_spots(X)) @ E / n_genes`` with ``X`` the spots x genes
    log-normalised counts (:func:`sigel.tissue.log_normalize`) of the genes
    that have a vector and ``E`` their vectors. Sparse throughout (the
    centring is applied to the product).

    Parameters
    ----------
    model
        A fitted `sigel.SIGEL`, or a genes x D table of gene vectors
        (``pandas.DataFrame`` indexed by gene name, e.g. from ``transform``).
    adata
        AnnData with raw counts (spots x genes), matched to the vectors by
        gene name; genes without a vector are ignored.
    layer, library_size_key
        Counts layer and optional ``obs`` column of library sizes.
    key_added
        ``adata.obsm[key_added]`` receives the array (``None``: nothing is
        written).

    Returns
    -------
    pandas.DataFrame
        Index spot names; columns ``SIGEL_1..SIGEL_D``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, sigel
    >>> ad = sigel.datasets.synthetic_tissue(30, seed=0)
    >>> E = pd.DataFrame(np.random.default_rng(0).normal(size=(30, 4)), index=ad.var_names)
    >>> S = sigel.tl.spot_embeddings(E, ad)
    >>> S.shape == (ad.n_obs, 4) and "sigel_spots" in ad.obsm
    True
    """
    E = embedding_frame(model)
    genes = pd.Index(E.index.astype(str)).intersection(pd.Index(adata.var_names.astype(str)), sort=False)
    if len(genes) == 0:
        raise SigelInputError("no gene of adata has a vector: the model's genes and adata.var_names do not overlap")
    X = tissue.log_normalize(adata, genes, layer=layer, library_size_key=library_size_key)
    Em = E.loc[genes].to_numpy(np.float64)
    S = np.asarray(X @ Em, dtype=np.float64)
    mu = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    S = (S - mu @ Em) / len(genes)
    out = pd.DataFrame(S, index=pd.Index(adata.obs_names.astype(str), name="spot"),
                       columns=[f"SIGEL_{i + 1}" for i in range(Em.shape[1])])
    if key_added is not None:
        _keys.store(adata, "obsm", key_added, out.to_numpy())
    return out
