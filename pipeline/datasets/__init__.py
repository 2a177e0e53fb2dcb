"""Importers that turn public talking-face corpora into identities-table rows and videos."""
