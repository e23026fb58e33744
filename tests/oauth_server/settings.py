"""A real OAuth 2.0 authorization server for the tests: django-oauth-toolkit on SQLite.

Started as a subprocess by ``tests/oauth_authserver.py``; only ever on 127.0.0.1. Its
cookies have their own names: browsers share cookies between ports of one host, and the
app under test also runs on 127.0.0.1.
"""

import os

SECRET_KEY = "oauth-test-server-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "oauth2_provider",
]
MIDDLEWARE = [
    "tests.oauth_server.faults.TokenEndpointFaults",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.oauth_server.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(os.path.dirname(__file__), "templates")],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
# The server answers requests in threads (token grants, introspection from the SMTP
# test server, the browser's pages) that write the same SQLite file: IMMEDIATE takes
# the write lock when a transaction starts, so a second writer waits for it (up to
# ``timeout``) instead of failing with "database is locked" when its read transaction
# cannot become a write one. (A 500 from /o/token/ was seen once, on Django 6.1, with no
# traceback kept; this is its likely cause, and LOGGING below keeps the next one.)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["OAUTH_SERVER_DB"],
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }
}
# A 500 prints its traceback on standard error, which pytest shows with the failing test.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
SESSION_COOKIE_NAME = "authserver_session"
CSRF_COOKIE_NAME = "authserver_csrftoken"
LOGIN_URL = "/accounts/login/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
OAUTH2_PROVIDER = {
    "SCOPES": {
        "SMTP.Send": "Send mail as you",
        "offline_access": "Stay signed in",
        "introspection": "Introspect tokens",
    },
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
}
