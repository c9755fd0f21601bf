"""movierec's shared kernel: the MLiP wire format, settings, Kafka adapters, durable files
and the root error type. It imports no other package of the project; the ``movierec``
command itself lives in ``ops.cli``."""

__version__ = "0.1.0"
