"""The recorded set-up of a model's data: which AnnData fields it read and how its images were built.

A fitted `sigel.SIGEL` keeps one `DataSetup` (``model.setup_``), saved with
the model. Everything that images new data for the model -- ``transform``
and every task -- asks it for the image options and lets it check the new
AnnData first, so a missing layer or coordinate field is reported in one
sentence before any work starts, and a missing library-size column falls
back to the row sums with one warning, the same way everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .._settings import logger
from .._validate import SigelInputError, jsonable

__all__ = ["DataSetup", "checked_options"]


@dataclass(frozen=True)
class DataSetup:
    """What a model was fitted on (fields read, image options, content fingerprint).

    Attributes
    ----------
    image_options
        The `sigel.GeneImages.from_anndata` keyword arguments that rebuild
        the model's images from new data: the fields read (``layer``,
        ``spatial_key``, ``library_size_key``, ``counts``) and the imaging
        options (``geometry`` as requested at fit time, ``resolution``,
        ``patch_size``, ``normalize``, ``log1p``, ``scale``, ...).
    content_hash
        Fingerprint of the training data (`sigel.data.images.content_hash`),
        or ``None`` (models fitted on prebuilt images by older versions).
    n_spots
        Spots of the training data.
    n_genes_input
        Genes of the training AnnData before the image filters.

    Examples
    --------
    >>> import sigel
    >>> from sigel.data.setup import DataSetup
    >>> ad = sigel.datasets.synthetic_tissue(12, shape=(8, 8), seed=0)
    >>> setup = DataSetup.from_images(sigel.GeneImages.from_anndata(ad, resolution=8, patch_size=4))
    >>> setup.options()["resolution"], setup.n_spots == ad.n_obs
    (8, True)
    >>> DataSetup.from_dict(setup.to_dict()) == setup
    True
    """

    image_options: dict = field(default_factory=dict)
    content_hash: str | None = None
    n_spots: int | None = None
    n_genes_input: int | None = None

    # ------------------------------------------------------------ building
    @classmethod
    def from_images(cls, images, **fields) -> "DataSetup":
        """The set-up of `GeneImages` (``fields`` override the recorded options, e.g. ``geometry='auto'``)."""
        from .images import GeneImages

        st = images.settings
        opts = {**GeneImages.image_options(st), **fields}
        n_spots, n_genes = st.get("n_spots"), st.get("n_genes_input")
        return cls(jsonable(opts), st.get("content_hash"), None if n_spots is None else int(n_spots),
                   None if n_genes is None else int(n_genes))

    @classmethod
    def from_dict(cls, d: dict) -> "DataSetup":
        """Inverse of `to_dict`."""
        return cls(dict(d.get("image_options") or {}), d.get("content_hash"), d.get("n_spots"),
                   d.get("n_genes_input"))

    @classmethod
    def from_config(cls, cfg: dict) -> "DataSetup":
        """The set-up saved in a model's ``config.json`` (older models saved only the image options)."""
        if isinstance(cfg.get("setup"), dict):
            return cls.from_dict(cfg["setup"])
        return cls(dict(cfg.get("image_options") or {}))

    def to_dict(self) -> dict:
        """Plain, JSON-ready dict."""
        return jsonable({"image_options": self.image_options, "content_hash": self.content_hash,
                       "n_spots": self.n_spots, "n_genes_input": self.n_genes_input})

    # ------------------------------------------------------------- using it
    def options(self, overrides: dict | None = None) -> dict:
        """The image options (a copy; ``overrides`` win)."""
        opts = dict(self.image_options)
        opts.update(overrides or {})
        return opts

    def for_data(self, adata, overrides: dict | None = None) -> dict:
        """The image options for reading ``adata``, after checking that it has the fields they name.

        Raises `sigel.SigelInputError` when ``adata`` lacks the layer or the
        coordinates the options name. A library-size column missing from
        ``adata`` (and not set in ``overrides``) falls back to the row sums
        with a warning.
        """
        return checked_options(adata, self.options(overrides), overrides)

    def same_content(self, adata) -> bool:
        """Whether ``adata`` holds exactly the data the model was fitted on (same fingerprint)."""
        from .images import content_hash

        if self.content_hash is None:
            return False
        o = self.image_options
        try:
            return content_hash(adata, layer=o.get("layer"), spatial_key=o.get("spatial_key", "spatial"),
                                library_size_key=o.get("library_size_key")) == self.content_hash
        except SigelInputError:
            return False


def checked_options(adata, opts: dict, overrides: dict | None = None) -> dict:
    """``opts`` (image options) made fit for reading ``adata``; see `DataSetup.for_data`.

    Raises `sigel.SigelInputError` when ``adata`` lacks the layer or the
    coordinates ``opts`` name; a library-size column it lacks (and that
    ``overrides`` does not set) becomes ``None`` (row sums), with a warning.
    Returns a copy.
    """
    from .. import tissue

    opts = dict(opts)
    layer = opts.get("layer")
    if layer is not None and layer not in getattr(adata, "layers", {}):
        raise SigelInputError(
            f"the model reads adata.layers[{layer!r}], which this AnnData does not have "
            f"(layers: {list(getattr(adata, 'layers', {}).keys())}); pass layer=... to read another")
    tissue.coordinate_source(adata, opts.get("spatial_key", tissue.DEFAULT_SPATIAL_KEY))
    lib = opts.get("library_size_key")
    if lib is not None and lib not in adata.obs and "library_size_key" not in (overrides or {}):
        logger.warning("library_size_key %r not in the new data; using the row sums", lib)
        opts["library_size_key"] = None
    return opts
