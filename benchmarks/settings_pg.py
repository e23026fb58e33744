"""The benchmark's settings on PostgreSQL, for the outbox case (``benchmarks/outbox.py``):
the throw-away cluster ``make bench`` starts (``PGPORT``); the database is created afresh
at every start."""

import os

from .settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": "multismtp_bench",
    }
}

#: Connections of Django's pool (``MULTISMTP_BENCH_PG_POOL=1``, set by
#: ``benchmarks/asyncsend.py``): one per concurrent ``asend_messages()`` call, which
#: holds its connection until it is done (the 16 threads of the backend's pool).
POOL_SIZE = 16
if os.environ.get("MULTISMTP_BENCH_PG_POOL") == "1":
    # Under ASGI, Django's documentation advises against persistent connections and for
    # a pool: without either, every call connects anew (a PostgreSQL backend forked on
    # this machine's two cores for each one).
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 4, "max_size": POOL_SIZE}}
