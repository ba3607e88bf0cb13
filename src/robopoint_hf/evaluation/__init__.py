"""Evaluation: benchmark scoring protocols (torch-free), the answer-generation runner, plots, and the `evaluate`
metric Space generated from the scoring code."""
