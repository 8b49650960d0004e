"""Downstream tasks; each module depends only on the data layer and the SIGEL model's public methods."""
