"""Locust scenarios and the SLO report for the recommendation service."""
