"""Incident drills on a running demo (``movierec drill <scenario>``): inject a fault, wait
for the alert at the receiver, recover (by itself, or with the runbook's commands, which
the drill runs and prints), restore, and write a postmortem skeleton with the timeline.

``core`` (scenarios as data, the timeline, the durations) and ``postmortem`` are pure;
``probes``, ``faults`` and ``runner`` are the adapters; ``cli`` is the command.
"""
