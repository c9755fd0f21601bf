"""``python -m movierec``: the ``movierec`` command (``ops.cli``), for when the console
script is not on the PATH. An entry point, never imported by the kernel it sits in."""

from ops.cli import main

main()
