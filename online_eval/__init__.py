"""Online accuracy, cost, experiment statistics and availability from telemetry."""
