"""Recipes: one per job (`lens run`, `lens probe`, `lens train`), each a list of stages."""

from lensml.recipes.jobs import probe_job, train_job
from lensml.recipes.enhance import run

__all__ = ["probe_job", "run", "train_job"]
