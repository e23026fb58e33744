"""Settings of the django-multismtp example project (`make demo`). Not for production.

Everything the demo writes (SQLite database, the SMTP sink's log) lives in the repository's
git-ignored ``.demo/`` directory; set ``DEMO_DIR`` to put it elsewhere.
"""

import os
from pathlib import Path

import django

PROJECT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PROJECT_DIR.parent
DEMO_DIR = Path(os.environ.get("DEMO_DIR", REPO_ROOT / ".demo"))
DEMO_DIR.mkdir(parents=True, exist_ok=True)
#: JSON lines, one per message received by the embedded SMTP sink (see demo_site.sink).
DEMO_SINK_LOG = DEMO_DIR / "sink.jsonl"
#: Where the demo serves (``manage.py demo --port`` re-points the OAuth URLs below).
DEMO_URL = f"http://127.0.0.1:{os.environ.get('DEMO_PORT', '8000')}"

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret")
DEBUG = True
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
    "demo_site",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "demo_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DEMO_DIR / "demo.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "/static/"
LOGIN_URL = "admin:login"

# One process, so the local-memory cache is enough for django-ratelimit here; a real site
# uses Redis or Memcached and keeps these checks on.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SILENCED_SYSTEM_CHECKS = [
    "django_ratelimit.E003",
    "django_ratelimit.W001",
    "django_multismtp.W002",
]

# SMTP passwords are stored encrypted with these keys (newest first).
FERNET_KEYS = [
    key for key in os.environ.get("FERNET_KEYS", "demo-only-fernet-key").split(",") if key
]

# Mail that names no sender uses this From; each account replaces it with its own.
DEFAULT_FROM_EMAIL = "webmaster@demo.test"
MULTISMTP = {
    # No hidden SMTP server: mail that no account matches fails with a clear error.
    "USE_FALLBACK_SERVER": False,
    # The demo's SMTP sink is on 127.0.0.1, which "My SMTP settings" (/smtp/) refuses as an
    # internal host unless this is on. Demo only: on a real site, users who type a host
    # must not reach the server's own network (see the security page of the docs).
    "ALLOW_INTERNAL_HOSTS": True,
    # The "Demo OAuth mailbox" account's purpose (the send page's OAuth button).
    "PURPOSES": {"oauth": "OAuth mailbox"},
    # The demo's own OAuth 2.0 authorization server (demo_site.oauth_server), as a generic
    # provider: one app for every account, as a site registers one app at Microsoft or
    # Google. Plain http is allowed on 127.0.0.1 only (check django_multismtp.E011). The
    # demo command points these URLs at the port it serves on.
    "OAUTH_PROVIDERS": {
        "generic": {
            "client_id": "multismtp-demo",
            "client_secret": "demo-client-secret",
            "authorize_url": f"{DEMO_URL}/oauth/authorize/",
            "token_url": f"{DEMO_URL}/oauth/token/",
            "revoke_url": f"{DEMO_URL}/oauth/revoke/",
            "scopes": "SMTP.Send",
        }
    },
}

BACKEND = "django_multismtp.backends.EmailBackend"
if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {"BACKEND": BACKEND},
        # The same backend, pinned to one purpose: mail sent with using="campaigns".
        "campaigns": {"BACKEND": BACKEND, "OPTIONS": {"purpose": "campaigns"}},
    }
else:
    EMAIL_BACKEND = BACKEND

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        # aiosmtpd (the embedded sink) is chatty below ERROR.
        "mail.log": {"level": "ERROR"},
    },
}
