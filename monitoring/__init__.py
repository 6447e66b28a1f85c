"""Drift monitoring: reference/current datasets, Evidently reports, the retrain decision."""
