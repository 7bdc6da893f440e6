"""Measured scaling tables: ``miram bench attention`` (and the step/loader benches)."""
