"""Batch mode: run predict, compare, score or project over every row of a corpus file, resumably, on one
process or several (`xmod-explorer batch ...`; see runner.py for how, and the README for the commands)."""

from xmod_explorer.batch.runner import BatchReport, BatchSettings, run_batch

__all__ = ["BatchReport", "BatchSettings", "run_batch"]
