"""``python -m benchmarks``: see ``benchmarks/README.md`` and ``--help``."""

from .run import main

main()
