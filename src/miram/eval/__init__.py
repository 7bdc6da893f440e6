"""Evaluation of encoders: features, probes, fine-tuning, metrics and comparisons."""
