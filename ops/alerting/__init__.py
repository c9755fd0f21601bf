"""Alerts that reach a person: the webhook receiver Alertmanager notifies."""
