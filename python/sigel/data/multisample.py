"""Several samples' gene images trained as one data set, each on its own grid.

:class:`SampleImages` bundles one :class:`~sigel.GeneImages` per sample
(tissue section). Every sample keeps its own geometry (height, width, tissue
mask): nothing is resampled or padded across samples. Images are *bucketed by
sample*: a training batch and an inference chunk always come from a single
sample, so a batch is one dense ``(B, 2, H_s, W_s)`` block on that sample's
grid, exactly as in a one-sample fit. The encoder, the mixture and the
prototypes are shared, so the vectors of all samples live in one space from
the start (no post-hoc alignment).

Rows are numbered globally: sample 0's genes first, then sample 1's, and so
on (``offsets``); gene names repeat across samples, so results are indexed by
a two-level :class:`pandas.MultiIndex` ``(sample, gene)``.

A single-sample ``SampleImages`` behaves exactly like its ``GeneImages``
(same rows, same batches), which is how the data-parallel trainer treats
every input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._validate import SigelInputError
from .images import GeneImages

__all__ = ["SampleImages", "split_by_sample"]


@dataclass
class SampleImages:
    """Gene images of several samples, addressed by global row.

    Attributes
    ----------
    samples : list of GeneImages
        One image set per sample (each on its own grid).
    names : pandas.Index
        Unique sample names, in order.

    Examples
    --------
    >>> import sigel
    >>> from sigel.data.multisample import SampleImages
    >>> a = sigel.GeneImages.from_anndata(sigel.datasets.synthetic_tissue(50, seed=0))
    >>> b = sigel.GeneImages.from_anndata(sigel.datasets.synthetic_tissue(50, seed=0, sample_seed=1))
    >>> s = SampleImages([a, b], ["s1", "s2"])
    >>> s.n_genes, s.n_samples
    (100, 2)
    """

    samples: list
    names: pd.Index

    def __post_init__(self):
        self.samples = list(self.samples)
        if not self.samples:
            raise SigelInputError("need at least one sample")
        for i, s in enumerate(self.samples):
            if not isinstance(s, GeneImages):
                raise SigelInputError(f"sample {i} must be a sigel.GeneImages; got {type(s).__name__}")
        names = pd.Index([str(n) for n in self.names])
        if len(names) != len(self.samples):
            raise SigelInputError(f"`sample_names` has {len(names)} names for {len(self.samples)} samples")
        if names.has_duplicates:
            raise SigelInputError(f"`sample_names` must be unique; duplicated: "
                                  f"{names[names.duplicated()].unique().tolist()}")
        self.names = names
        sizes = np.array([s.n_genes for s in self.samples], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])

    # ------------------------------------------------------------------ sizes
    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.samples)

    @property
    def n_genes(self) -> int:
        """Total number of rows (genes summed over samples)."""
        return int(self.offsets[-1])

    @property
    def height(self) -> int:
        """Largest image height over the samples."""
        return max(s.height for s in self.samples)

    @property
    def width(self) -> int:
        """Largest image width over the samples."""
        return max(s.width for s in self.samples)

    @property
    def settings(self) -> dict:
        """The first sample's image settings (all samples are built with the same options)."""
        return self.samples[0].settings

    @property
    def genes(self) -> pd.Index:
        """Row labels: a ``(sample, gene)`` MultiIndex (gene names repeat across samples)."""
        return pd.MultiIndex.from_arrays(
            [np.repeat(self.names.to_numpy(), np.diff(self.offsets)),
             np.concatenate([s.genes.to_numpy() for s in self.samples])], names=["sample", "gene"])

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {s.n_genes} genes {s.height}x{s.width}" for n, s in zip(self.names, self.samples))
        return f"SampleImages: {self.n_samples} samples ({parts})"

    # ---------------------------------------------------------------- access
    def sample_of(self, rows) -> np.ndarray:
        """Sample number of every global row."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def _locate(self, idx) -> tuple[int, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            raise SigelInputError("empty batch")
        s = self.sample_of(idx)
        if (s != s[0]).any():
            raise SigelInputError("a batch must come from a single sample (rows of several samples given)")
        return int(s[0]), idx - self.offsets[s[0]]

    def dense(self, idx) -> np.ndarray:
        """Dense ``(B, H_s, W_s)`` images of global rows ``idx`` (all from one sample ``s``)."""
        s, local = self._locate(idx)
        return self.samples[s].dense(local)

    def to_tensor(self, idx, device=None, dtype=None):
        """Dense ``(B, 2, H_s, W_s)`` batch of global rows ``idx`` (all from one sample)."""
        s, local = self._locate(idx)
        return self.samples[s].to_tensor(local, device=device, dtype=dtype)

    def rows(self, sample) -> np.ndarray:
        """Global rows of one sample (by number or name)."""
        s = sample if isinstance(sample, (int, np.integer)) else self.names.get_loc(str(sample))
        return np.arange(self.offsets[s], self.offsets[s + 1])

    # ---------------------------------------------------------------- batches
    def batches(self, batch_size: int, generator=None) -> list:
        """Shuffled training batches, each from one sample.

        For one sample this is :func:`sigel.data.batches.gene_batches` (same
        permutation for the same generator state). For several samples each
        sample's genes are permuted and cut into batches, then the order of
        all batches is shuffled, so consecutive steps mix samples.

        Parameters
        ----------
        batch_size
            Genes per batch (each sample's last batch may be smaller).
        generator
            CPU ``torch.Generator`` (``None``: ordered, unshuffled).

        Returns
        -------
        list of torch.LongTensor
            Global rows.
        """
        import torch

        if self.n_samples == 1:
            from .batches import gene_batches

            return gene_batches(self.n_genes, batch_size, generator)
        out = []
        for s in range(self.n_samples):
            g = int(self.offsets[s + 1] - self.offsets[s])
            order = torch.randperm(g, generator=generator) if generator is not None else torch.arange(g)
            out.extend(torch.split(order + int(self.offsets[s]), batch_size))
        if generator is not None:
            out = [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]
        return out

    def n_batches(self, batch_size: int) -> int:
        """Number of batches per epoch of :meth:`batches`."""
        return int(sum(-(-int(g) // batch_size) for g in np.diff(self.offsets)))


def normalize_samples(adatas, sample_names=None) -> tuple[list, pd.Index]:
    """A list of AnnData (or a dict) and names -> (list, names); validates both."""
    if isinstance(adatas, dict):
        if sample_names is not None:
            raise SigelInputError("`sample_names` must be None when the samples are given as a dict")
        names = [str(k) for k in adatas]
        adatas = list(adatas.values())
    else:
        adatas = list(adatas)
        names = [f"sample_{i}" for i in range(len(adatas))] if sample_names is None \
            else [str(n) for n in sample_names]
    if not adatas:
        raise SigelInputError("no samples given (an empty list)")
    if len(names) != len(adatas):
        raise SigelInputError(f"`sample_names` has {len(names)} names for {len(adatas)} samples")
    names = pd.Index(names)
    if names.has_duplicates:
        raise SigelInputError(f"`sample_names` must be unique; got {names.tolist()}")
    return adatas, names


def split_by_sample(frame: pd.DataFrame) -> dict:
    """Split a ``(sample, gene)``-indexed result table into one gene-indexed table per sample.

    Parameters
    ----------
    frame
        E.g. ``model.embeddings_`` of a multi-sample fit.

    Returns
    -------
    dict
        ``{sample name: DataFrame indexed by gene}`` (sample order kept).

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.MultiIndex.from_tuples([("a", "g1"), ("b", "g1")], names=["sample", "gene"])
    >>> list(split_by_sample(pd.DataFrame({"x": [1, 2]}, index=idx)))
    ['a', 'b']
    """
    if not isinstance(frame.index, pd.MultiIndex) or "sample" not in frame.index.names:
        raise SigelInputError("expected a table indexed by (sample, gene), e.g. the embeddings of a multi-sample fit")
    out = {}
    for name in frame.index.get_level_values("sample").unique():
        out[name] = frame.xs(name, level="sample")
    return out
