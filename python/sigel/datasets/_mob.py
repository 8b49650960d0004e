"""The bundled mouse olfactory bulb section (Ståhl et al. 2016, Science 353:78)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CITATION = (
    "Ståhl PL, Salmén F, Vickovic S, et al. Visualization and analysis of gene expression in tissue "
    "sections by spatial transcriptomics. Science 353(6294):78-82 (2016). Replicate 11 of the mouse "
    "olfactory bulb, as distributed with SpatialDE; layer labels from MERINGUE/STdeconvolve."
)


def extdata_dir() -> Path:
    """Folder of the data files shared with the R package (``inst/extdata``)."""
    return Path(__file__).resolve().parent / "extdata"


def mouse_olfactory_bulb():
    """Mouse olfactory bulb, replicate 11 (legacy ST, 262 spots).

    Raw counts of the genes detected in >= 10 spots, integer grid
    coordinates in ``obs['x','y']`` (also ``obsm['spatial']``), the 5
    annotated layers in ``obs['layer']`` and ``obs['in_MOB_sample_info']``
    (the 260 spots used by SpatialDE/SPARK).

    Returns
    -------
    AnnData
        Spots x genes; ``uns['citation']`` holds the reference.

    Examples
    --------
    >>> import sigel
    >>> adata = sigel.datasets.mouse_olfactory_bulb()
    >>> adata.shape[0]
    262
    """
    import anndata as ad
    import scipy.io as sio
    import scipy.sparse as sp

    d = extdata_dir() / "mob"
    counts = sp.csr_matrix(sio.mmread(str(d / "counts.mtx.gz")).T, dtype=np.float32)
    genes = pd.read_csv(d / "genes.tsv.gz", sep="\t")["gene"].astype(str)
    obs = pd.read_csv(d / "spots.tsv.gz", sep="\t", index_col=0)
    obs.index = obs.index.astype(str)
    obs["layer"] = pd.Categorical(obs.pop("layer_annotation"))
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index(genes.values, name=None)))
    adata.obsm["spatial"] = obs[["x", "y"]].to_numpy(np.float64)
    adata.uns["citation"] = CITATION
    return adata
