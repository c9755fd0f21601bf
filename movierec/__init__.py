"""movierec: the shared core of the project (CLI, settings, the MLiP wire format)."""

__version__ = "0.1.0"
