"""Evaluation: WER/CER (and local `evaluate` modules), per-depth evaluation and report, SVCCA, pruning search."""
