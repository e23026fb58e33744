"""Django settings of the benchmark (``python -m benchmarks`` sets them itself).

A SQLite file in the repository's git-ignored ``.bench/`` directory (``MULTISMTP_BENCH_DIR``
puts it elsewhere); the harness deletes it and migrates afresh at every start. The
delivery log is on, as it is by default, so its cost is part of what is measured.
"""

import os
from pathlib import Path

import django

BENCH_DIR = Path(
    os.environ.get("MULTISMTP_BENCH_DIR") or Path(__file__).resolve().parent.parent / ".bench"
)

SECRET_KEY = "benchmark-only-not-secret"  # noqa: S105
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_multismtp",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BENCH_DIR / "bench.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

FERNET_KEYS = ["benchmark-only-key"]
DEFAULT_FROM_EMAIL = "webmaster@site.bench"

MULTISMTP = {
    "DELIVERY_LOG": True,
    # Every benchmark message names its account: one that does not must fail loudly
    # instead of going to a fallback server nobody is watching.
    "USE_FALLBACK_SERVER": False,
}
# One process, no django-ratelimit views: the cache check does not apply here.
SILENCED_SYSTEM_CHECKS = ["django_multismtp.W002"]

BACKEND = "django_multismtp.backends.EmailBackend"
if django.VERSION >= (6, 1):
    # Accounts only (see USE_FALLBACK_SERVER): 6.1's MAILERS wants a host or this said.
    MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"fallback": False}}}
else:
    EMAIL_BACKEND = BACKEND

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django_multismtp": {"level": "ERROR"}},
}
