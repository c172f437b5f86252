"""Evaluation: retrieval and localization metrics, the evaluators, their callbacks, plots, results table and report."""
