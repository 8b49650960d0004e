"""Count-level views of gene images: binomial thinning of the raw counts.

Two images of the same gene that differ only by sampling noise are the
training signal that makes a gene vector describe the *pattern* rather than
the speckle of a shallow measurement. Keeping each of a gene's counts with
probability ``p`` (binomial thinning) produces exactly such an image: the
same expression rate at depth ``p`` times the original, with fresh,
independent-looking sampling noise. Pixel dropout does not model this (it
removes whole spots, never lowers a count).

A view is built like the training image (library-size normalisation to the
same target, ``log1p``, mean per pixel, the gene's own robust divisor,
clipped at 1), except that the library sizes are multiplied by ``p`` so the
normalised level does not change with depth. At ``p = 1`` it reproduces the
training image exactly.

Everything is vectorised per batch: the batch's counts are densified
(genes x spots), thinned with ``torch.binomial`` and scattered to pixels
with one ``index_add``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import tissue
from .._validate import SigelInputError
from .images import GeneImages, spot_factors

__all__ = ["CountViews", "RarefiedImages", "rarefied", "skip_draws"]


class CountViews:
    """Binomially thinned images of the genes of a :class:`~sigel.GeneImages`.

    Parameters
    ----------
    counts
        ``(G, S)`` sparse raw counts, rows in the order of ``images.genes``.
    spot_factor
        ``(S,)`` normalisation factor of each spot (target sum / library size).
    images
        The :class:`~sigel.GeneImages` the views imitate (geometry, mask,
        spot pixels, processing).

    Examples
    --------
    >>> import sigel, torch
    >>> adata = sigel.datasets.synthetic_tissue(40, seed=0)
    >>> images = sigel.GeneImages.from_anndata(adata)
    >>> views = CountViews.from_anndata(adata, images)
    >>> x = views.batch([0, 1], torch.tensor([1.0, 1.0]))
    >>> bool(torch.allclose(x, images.to_tensor([0, 1]), atol=1e-5))
    True
    """

    def __init__(self, counts: sp.csr_matrix, spot_factor: np.ndarray, images: GeneImages):
        self.counts = sp.csr_matrix(counts, dtype=np.float32)
        self.spot_factor = np.asarray(spot_factor, dtype=np.float32)
        self.height, self.width = images.height, images.width
        self.mask = images.mask
        self.spot_pixel = np.asarray(images.spot_pixel, dtype=np.int64)
        per_pixel = np.bincount(self.spot_pixel, minlength=self.height * self.width).astype(np.float32)
        self.inv_per_pixel = np.divide(1.0, per_pixel, out=np.zeros_like(per_pixel), where=per_pixel > 0)
        self.log1p = bool(images.settings.get("log1p", True))
        self.clip = images.settings.get("scale") == "quantile"  # the robust scaling clips at 1; no scaling does not
        self._device_cache: dict = {}  # torch copies of the arrays above, per device
        self.divisor = self._divisors(images)

    # ------------------------------------------------------------ building
    @classmethod
    def from_anndata(cls, adata, images: GeneImages, *, layer: str | None = None,
                     library_size_key: str | None = None) -> "CountViews":
        """Read the raw counts of ``images.genes`` from ``adata`` (the AnnData the images were built from).

        ``layer`` and ``library_size_key`` default to the ones recorded in
        ``images.settings``. Raises :class:`~sigel.SigelInputError` when the
        values are not counts (negative or non-integer) or the spots differ.
        """
        st = images.settings
        layer = st.get("layer") if layer is None else layer
        library_size_key = st.get("library_size_key") if library_size_key is None else library_size_key
        if adata.n_obs != len(images.spot_names) or not np.array_equal(
                adata.obs_names.astype(str).to_numpy(), np.asarray(images.spot_names, dtype=str)):
            raise SigelInputError("CountViews: `adata` must hold the spots the images were built from")
        X = tissue.counts(adata, layer)  # numeric, finite, non-negative
        try:
            tissue.check_integers(X, adata, layer)
        except SigelInputError as e:
            raise SigelInputError(f"CountViews: binomial thinning needs raw integer counts; {e}") from None
        lib = tissue.library_size(adata, layer, library_size_key=library_size_key, X=X)
        cols = pd.Index(adata.var_names.astype(str)).get_indexer(pd.Index(images.genes))
        if np.any(cols < 0):
            raise SigelInputError("CountViews: some image genes are not in `adata.var_names`")
        C = sp.csr_matrix(X[:, cols].T, dtype=np.float32)
        return cls(C, spot_factors(lib, st.get("normalize", True), st.get("target_sum")), images)

    def _divisors(self, images: GeneImages) -> np.ndarray:
        """Each gene's robust divisor, read off the training images (p = 1 view over processed image).

        The processed value of a pixel is ``min(u / d, 1)`` for its unscaled
        value ``u``; the smallest non-zero pixel is never clipped unless all
        are, so ``d = min(u) / min(processed)`` (any ``d <= min(u)`` gives the
        same image when all are clipped).
        """
        if images.settings.get("scale") != "quantile":
            return np.ones(self.counts.shape[0], dtype=np.float32)
        U = self._unscaled_sparse()
        V = images.values
        d = np.ones(U.shape[0], dtype=np.float64)
        has = (np.diff(U.indptr) > 0) & (np.diff(V.indptr) > 0)
        if has.any():
            umin = np.minimum.reduceat(U.data, U.indptr[:-1][has]) if U.nnz else np.zeros(0)
            vmin = np.minimum.reduceat(V.data, V.indptr[:-1][has]) if V.nnz else np.zeros(0)
            d[has] = umin / np.maximum(vmin, 1e-12)
        return d.astype(np.float32)

    def _unscaled_sparse(self) -> sp.csr_matrix:
        """``(G, H*W)`` sparse unscaled pixel values of every gene (no thinning)."""
        vals = sp.csr_matrix(self.counts @ sp.diags(self.spot_factor))
        if self.log1p:
            vals.data = np.log1p(vals.data)
        S = len(self.spot_pixel)
        scatter = sp.csr_matrix((self.inv_per_pixel[self.spot_pixel], (np.arange(S), self.spot_pixel)),
                                shape=(S, self.height * self.width), dtype=np.float32)  # mean per pixel
        out = sp.csr_matrix(vals @ scatter, dtype=np.float32)
        out.eliminate_zeros()
        out.sort_indices()
        return out

    # ------------------------------------------------------------ views
    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return self.counts.shape[0]

    def batch(self, idx, keep, *, generator=None, device=None):
        """Thinned images of genes ``idx``: a ``(B, 2, H, W)`` tensor like :meth:`GeneImages.to_tensor`.

        Parameters
        ----------
        idx
            Gene rows.
        keep
            ``(B,)`` tensor of keep probabilities in ``(0, 1]`` (1 = the
            training image itself).
        generator
            Torch generator for the binomial draws (on ``device``).
        device
            Torch device (default CPU).
        """
        import torch

        idx = np.asarray(idx)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        keep = torch.as_tensor(keep, dtype=torch.float32, device=dev).reshape(-1, 1)
        C = self._counts(idx, dev)
        thinned = torch.where(keep < 1.0, torch.binomial(C, keep.expand_as(C), generator=generator), C)
        return self._render(thinned, keep, idx, dev)

    def rarefied(self, idx, keep, *, generator=None) -> np.ndarray:
        """Rarefied draws of genes ``idx``: a ``(B, H * W)`` float32 array of image values (CPU).

        Each count is kept with probability ``keep`` (``(B,)`` tensor; 1 =
        the whole image) and the draw is imaged as a shallower measurement
        would be: every kept count weighs what it did in the full image
        (library-size factor, ``log1p``, mean per pixel, the gene's divisor,
        clipped at 1), unlike :meth:`batch`, which brings the level back to
        full depth. Only the non-zero counts are drawn, so a draw costs what
        the gene's detected spots cost plus one pass over the output.
        """
        import torch

        idx = np.asarray(idx, dtype=np.int64)
        sub = self.counts[idx]
        per_row = np.diff(sub.indptr)
        p = torch.as_tensor(keep, dtype=torch.float32).reshape(-1).repeat_interleave(torch.from_numpy(per_row))
        c = torch.from_numpy(sub.data)
        vals = torch.where(p < 1.0, torch.binomial(c, p, generator=generator), c).numpy() \
            * self.spot_factor[sub.indices]
        if self.log1p:
            vals = np.log1p(vals)
        row = np.repeat(np.arange(len(idx)), per_row)
        pixel = self.spot_pixel[sub.indices]
        vals = vals * self.inv_per_pixel[pixel] / self.divisor[idx][row]  # mean per pixel, robust divisor
        HW = self.height * self.width
        out = np.bincount(row * HW + pixel, weights=vals, minlength=len(idx) * HW).astype(np.float32)
        if self.clip:
            np.minimum(out, 1.0, out=out)
        return out.reshape(len(idx), HW)

    def split(self, idx, keep, *, generator=None, device=None):
        """Two images of genes ``idx`` from disjoint halves of their counts (noise2noise pairs).

        Every count goes to the first view with probability ``keep`` and to
        the second otherwise, so the two views have independent sampling
        noise (for Poisson counts exactly) and depths ``keep`` and
        ``1 - keep``; each is normalised to the training image's level.

        Parameters
        ----------
        idx
            Gene rows.
        keep
            ``(B,)`` tensor of probabilities in ``(0, 1)``.
        generator
            Torch generator for the binomial draws (on ``device``).
        device
            Torch device (default CPU).

        Returns
        -------
        tuple of torch.Tensor
            Two ``(B, 2, H, W)`` tensors like :meth:`batch`.
        """
        import torch

        idx = np.asarray(idx)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        keep = torch.as_tensor(keep, dtype=torch.float32, device=dev).reshape(-1, 1).clamp(1e-3, 1 - 1e-3)
        C = self._counts(idx, dev)
        first = torch.binomial(C, keep.expand_as(C), generator=generator)
        return self._render(first, keep, idx, dev), self._render(C - first, 1.0 - keep, idx, dev)

    def _counts(self, idx: np.ndarray, dev):
        """Dense ``(B, S)`` counts of genes ``idx`` on ``dev``."""
        import torch

        return torch.from_numpy(self.counts[idx].toarray()).to(dev)

    def _render(self, counts, keep, idx: np.ndarray, dev):
        """Images of ``(B, S)`` counts taken at depth ``keep`` (``(B, 1)``), processed like the training images."""
        import torch

        cache = self._device_cache.setdefault(str(dev), {})
        if not cache:
            cache["factor"] = torch.from_numpy(self.spot_factor).to(dev)
            cache["pixel"] = torch.from_numpy(self.spot_pixel).to(dev)
            cache["inv"] = torch.from_numpy(self.inv_per_pixel).to(dev)
            cache["mask"] = torch.from_numpy(self.mask.astype(np.float32)).to(dev)
            cache["divisor"] = torch.from_numpy(self.divisor).to(dev)
        vals = counts * (cache["factor"][None, :] / keep)
        if self.log1p:
            vals = torch.log1p(vals)
        out = torch.zeros(len(idx), self.height * self.width, device=dev, dtype=torch.float32)
        out.index_add_(1, cache["pixel"], vals)
        out = out * cache["inv"][None, :]
        out = out / cache["divisor"][torch.as_tensor(idx, device=dev)][:, None]
        if self.clip:
            out = torch.minimum(out, torch.ones((), device=dev))
        v = out.reshape(len(idx), self.height, self.width)
        m = cache["mask"].expand_as(v)
        return torch.stack([v, m], dim=1)


class RarefiedImages(GeneImages):
    """Gene images read as depth-matched draws: every read rarefies each gene's counts afresh.

    Each gene's counts are binomially thinned to at most ``images.settings
    ['rarefy']`` in total (keep probability ``min(1, rarefy / total)``) and
    imaged as a shallower measurement would be (:meth:`CountViews.rarefied`).
    A gene detected in many spots and one detected in few then reach the
    encoder with the same sampling depth, so the speckle of a shallow gene is
    no longer something that tells genes apart.

    :meth:`dense` and :meth:`to_tensor` draw from the object's own
    ``generator`` (a ``torch.Generator`` seeded at construction; checkpoints
    save its state), so a sequence of reads is reproducible. The
    ``values`` are the full images (for detection rates and plots); readers
    that go to the sparse rows for speed read :meth:`dense` instead when
    ``draws`` is ``True`` (the encoder's sparse token route does).
    """

    draws = True

    def __init__(self, images: GeneImages, seed: int = 0):  # noqa: D107 (documented on the class)
        if images.counts is None or images.settings.get("rarefy") is None:
            raise SigelInputError("depth-matched draws need images built with `rarefy` (they keep the counts)")
        self.__dict__.update(images.__dict__)
        import torch

        self._views = CountViews(images.counts, images.spot_factor, images)
        self.whole_images = images  # the stored images, for genes that every draw reads whole
        totals = np.asarray(images.counts.sum(1), dtype=np.float64).ravel()
        keep = np.minimum(1.0, float(images.settings["rarefy"]) / np.maximum(totals, 1.0))
        self._keep = torch.from_numpy(keep.astype(np.float32))
        self._totals = totals
        #: genes whose total is at most the common depth: every draw is the whole image
        self.read_whole = keep >= 1.0
        self.generator = torch.Generator().manual_seed(int(seed))

    def draws_by_depth(self, min_draws: int, max_draws: int) -> np.ndarray:
        """How many draws each gene's counts hold: ``ceil(total / rarefy)``, clipped to ``[min_draws, max_draws]``.

        A gene ``k`` times deeper than the common depth holds about ``k``
        draws with little overlap (each keeps ``1 / k`` of its counts), so
        averaging that many uses most of its counts. Genes read whole (total
        at most the common depth) get 1: every draw is the same image.

        Returns
        -------
        numpy.ndarray
            ``(n_genes,)`` int64, in row order.
        """
        lo, hi = int(min_draws), int(max_draws)
        if not 1 <= lo <= hi:
            raise SigelInputError(f"need 1 <= min_draws <= max_draws; got {lo} and {hi}")
        n = np.ceil(self._totals / float(self.settings["rarefy"]))
        return np.where(self.read_whole, 1, np.clip(n, lo, hi)).astype(np.int64)

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed``."""
        self.generator.manual_seed(int(seed))

    def dense(self, idx) -> np.ndarray:
        """A fresh rarefied draw of genes ``idx`` as a ``(B, H, W)`` array (:meth:`CountViews.rarefied`;
        what :meth:`to_tensor` reads)."""
        idx = np.asarray(idx, dtype=np.int64)
        return self._views.rarefied(idx, self._keep[idx], generator=self.generator).reshape(
            len(idx), self.height, self.width)


def skip_draws(images, rows) -> None:
    """Draw rows ``rows`` of depth-matched images and discard them (nothing for other images).

    :class:`RarefiedImages` draw from one sequential generator, and binomial
    draws cannot be skipped: a reader that leaves a block of rows to another
    process (a data-parallel rank) draws them anyway, with the call a single
    process makes, so that its next own draws are the ones a single process
    would make.
    """
    if getattr(images, "draws", False) and len(rows):
        images.dense(rows)


def rarefied(images, seed: int = 0):
    """``images`` as :class:`RarefiedImages` when they were built with ``rarefy``; else ``images`` itself."""
    if isinstance(images, GeneImages) and not isinstance(images, RarefiedImages) \
            and images.settings.get("rarefy") is not None and images.counts is not None:
        return RarefiedImages(images, seed)
    return images
