"""Responsible-operation audits of the running system, from its own telemetry.

``movierec audit safety`` (and, as they land, fairness, feedback and security) reads the
served-records topic, the event log and the online store, and writes a report that
states the requirement it checks, the measurement, the result and the mitigation in
force (``audit.report``). Each audit's judgement is a pure core (``audit.safety``...);
Kafka and Redis sit behind ``audit.telemetry``. The simulator's ground truth is never
read here: an audit sees what the team's system sees.
"""
