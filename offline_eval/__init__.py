"""Leakage-free temporal evaluation and the comparison of candidate models."""
