"""The benchmark's settings for the ASGI app that uvicorn serves (``benchmarks/asgiapp.py``,
started by ``benchmarks/asyncsend.py``): the database of the benchmark process, which
migrates it and creates the account first (SQLite in ``.bench/``, or PostgreSQL when
``MULTISMTP_BENCH_DATABASE=pg``)."""

import os

if os.environ.get("MULTISMTP_BENCH_DATABASE") == "pg":
    from .settings_pg import *  # noqa: F403
else:
    from .settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.asgiapp"
ALLOWED_HOSTS = ["127.0.0.1"]
