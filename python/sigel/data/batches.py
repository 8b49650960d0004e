"""Gene batches: the order in which genes are visited in an epoch."""
from __future__ import annotations

import torch

__all__ = ["gene_batches"]


def gene_batches(n_genes: int, batch_size: int, generator: torch.Generator | None = None) -> list:
    """Shuffled (or ordered, without a generator) gene-index batches.

    Parameters
    ----------
    n_genes
        Number of genes.
    batch_size
        Genes per batch (the last batch may be smaller).
    generator
        CPU generator for a deterministic permutation; ``None`` keeps order.

    Returns
    -------
    list of torch.LongTensor
    """
    order = torch.randperm(n_genes, generator=generator) if generator is not None else torch.arange(n_genes)
    return list(torch.split(order, batch_size))
