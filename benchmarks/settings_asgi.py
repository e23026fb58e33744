"""The benchmark's settings for the ASGI app that uvicorn serves (``benchmarks/asgiapp.py``,
started by ``benchmarks/asyncsend.py``): the same SQLite database as the benchmark process,
which migrates it and creates the account first."""

from .settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.asgiapp"
ALLOWED_HOSTS = ["127.0.0.1"]
