"""Recipes: one module per job (`lens run`, `lens probe`, `lens train`, `lens apply`, `lens sweep`), each a list
of stages (stages.py) over the library; the command line (lensml.cli) only parses options and prints."""
