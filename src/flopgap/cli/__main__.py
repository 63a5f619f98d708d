"""``python -m flopgap.cli ...``: the same CLI as the ``flopgap`` script."""

from flopgap.cli import main

main()
