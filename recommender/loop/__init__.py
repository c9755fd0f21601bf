"""The retraining loop: triggers, the cycle's state machine, its journal and lock."""
