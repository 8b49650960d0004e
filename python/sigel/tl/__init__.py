"""Tasks on the gene embeddings (one module per task in ``sigel.tasks``)."""
__all__: list[str] = []
