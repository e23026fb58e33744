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
