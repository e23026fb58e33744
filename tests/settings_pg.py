"""The same suite on PostgreSQL: the throw-away cluster `make test` starts (PGPORT)."""

import os

from .settings import *  # noqa: F403
from .settings import _suffix

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": "postgres",
        "TEST": {"NAME": f"test_multismtp_{_suffix}"},
    }
}
