"""Offline evaluation: splits, the validation slice and early stopping, metrics, holdout scoring."""
