"""Settings for running Django's own SMTP backend tests against our backend.

Deliberately close to what Django's ``tests/runtests.py`` gives its mail tests: no
``MAILERS`` (the tests configure mailers themselves, in Django 6.1's compatibility mode
where they construct backends directly), no ``EMAIL_*`` beyond Django's defaults, and
a database that holds our tables and no SMTP account, so every message takes the
fallback path that the README calls a drop-in for Django's backend.
"""

SECRET_KEY = "conformance-only-not-secret"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_multismtp",
]
# In memory: nothing here is shared with another process, so parallel tox environments
# cannot collide on a file name.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
FERNET_KEYS = ["conformance-key"]
SILENCED_SYSTEM_CHECKS = [
    "django_ratelimit.E003",
    "django_ratelimit.W001",
    "django_multismtp.W002",
    "django_multismtp.W003",  # the test runner installs locmem as the default mailer
]
