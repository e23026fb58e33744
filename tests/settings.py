"""Test settings, written once in Django 6.1's MAILERS style.

On Django < 6.1 the same mailer is expressed as EMAIL_BACKEND (see ``tests/mailers.py``
for per-test overrides). SQLite uses a file so that other processes (limits and worker
tests) see the same test database.
"""

import os
import tempfile

import django

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_ratelimit",
    "django_multismtp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_suffix = os.environ.get("MULTISMTP_TEST_DB_SUFFIX", "local").replace("-", "_")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), f"multismtp_{_suffix}.sqlite3"),
        "TEST": {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"multismtp_test_{_suffix}_{os.getpid()}.sqlite3"
            )
        },
        # No fsync at each commit (the PostgreSQL cluster of `make test` runs with
        # fsync=off too): a throw-away file needs no durability across an OS crash, and
        # locking, and what other processes see, are unchanged. Each transactional test's
        # flush, each migration and each child's write waited for the disk; with three
        # suites on a shared disk, test_oauth_tokens took 137 s instead of 99 s.
        "OPTIONS": {"timeout": 20, "init_command": "PRAGMA synchronous=OFF"},
    }
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# LocMem is fine for one test process; production sites get the W002 warning.
SILENCED_SYSTEM_CHECKS = [
    "django_ratelimit.E003",
    "django_ratelimit.W001",
    "django_multismtp.W002",
]

FERNET_KEYS = ["test-key-one"]
DEFAULT_FROM_EMAIL = "webmaster@site.test"

MULTISMTP = {"PURPOSES": {"billing": "Billing"}}

BACKEND = "django_multismtp.backends.EmailBackend"
if django.VERSION >= (6, 1):
    # No host: like Django's backend, ours requires one under MAILERS unless the mailer
    # says it sends through accounts only.
    MAILERS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"fallback": False}}}
else:
    EMAIL_BACKEND = BACKEND

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        "mail.log": {"level": "ERROR"},
        "django_multismtp": {"level": "ERROR"},
        "django.request": {"level": "ERROR"},
    },
}

# Django's tasks framework runs the outbox drain in tests (tests/test_tasks.py): core
# django.tasks on Django 6, the django-tasks backport (an app) on 5.2.
if django.VERSION >= (6, 0):
    TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
else:
    INSTALLED_APPS.append("django_tasks")
    TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
