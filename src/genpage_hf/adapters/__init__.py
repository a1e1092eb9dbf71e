"""Adapters from public data sets to GenPage records and catalogs."""
