"""System checks: each misconfiguration gets its stable id, and sane settings get none.

The check functions only read settings, so a Redis cache can be configured without a
Redis server. The test runner swaps every mailer for locmem, so each test that cares
about W003 wires the backend itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import django
import pytest
from django.core import checks

from django_multismtp.checks import (
    check_deployment,
    check_fernet_keys,
    check_rate_limit_cache,
    check_settings,
)

OURS = "django_multismtp.backends.EmailBackend"
DJANGO_61 = django.VERSION >= (6, 1)
PURPOSES = {"billing": "Billing"}
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
REDIS = "django.core.cache.backends.redis.RedisCache"


def ids(messages: list[Any]) -> list[str]:
    return sorted(m.id for m in messages)


def our_backend(settings: Any, **options: Any) -> None:
    """Wire our backend as the default mailer without touching deprecated settings."""
    if DJANGO_61:
        settings.MAILERS = {"default": {"BACKEND": OURS, "OPTIONS": options}}
    else:
        assert not options, "OPTIONS only exist under MAILERS"
        settings.EMAIL_BACKEND = OURS


@pytest.fixture
def wired(settings: Any) -> Any:
    """Settings where nothing is wrong but what a test breaks on purpose."""
    our_backend(settings)
    settings.CACHES = {"default": {"BACKEND": REDIS, "LOCATION": "redis://127.0.0.1:6379"}}
    settings.MULTISMTP = {"PURPOSES": PURPOSES}
    settings.FERNET_KEYS = ["a-long-random-key"]
    return settings


def test_a_clean_configuration_has_no_messages(wired):
    assert check_fernet_keys() == []
    assert check_settings() == []
    assert check_rate_limit_cache() == []


# -- FERNET_KEYS -------------------------------------------------------------------------


def test_fernet_keys_missing_warns(wired):
    del wired.FERNET_KEYS
    (warning,) = check_fernet_keys()
    assert warning.id == "django_multismtp.W001"
    assert warning.level == checks.WARNING
    assert "SECRET_KEY" in warning.msg and warning.hint


@pytest.mark.parametrize(
    "keys",
    [[], (), [""], ["good", ""], [123], ["good", None], "a-string-not-a-list", {"key": "value"}],
    ids=["empty-list", "empty-tuple", "empty-key", "one-empty", "int", "none-item", "str", "dict"],
)
def test_fernet_keys_malformed_is_an_error(wired, keys):
    wired.FERNET_KEYS = keys
    (error,) = check_fernet_keys()
    assert error.id == "django_multismtp.E001"
    assert error.level == checks.ERROR
    assert error.hint


@pytest.mark.parametrize("keys", [["one"], ("new", "old"), [b"bytes-key"]])
def test_fernet_keys_well_formed(wired, keys):
    wired.FERNET_KEYS = keys
    assert check_fernet_keys() == []


# -- MULTISMTP ---------------------------------------------------------------------------


def test_unknown_multismtp_key(wired):
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "DEFAULT_PURPOSES": "system", "TIMEOUT": 3}
    errors = check_settings()
    assert ids(errors) == ["django_multismtp.E003", "django_multismtp.E003"]
    assert ["'DEFAULT_PURPOSES'" in errors[0].msg, "'TIMEOUT'" in errors[1].msg] == [True, True]
    assert "DEFAULT_PURPOSE" in errors[0].hint  # the known keys, to spot the typo


def test_unknown_default_purpose(wired):
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "DEFAULT_PURPOSE": "marketing"}
    (error,) = check_settings()
    assert error.id == "django_multismtp.E002"
    assert "'marketing'" in error.msg
    assert "billing" in error.hint and "system" in error.hint


@pytest.mark.parametrize("purpose", ["billing", "customer_service"])
def test_known_default_purpose(wired, purpose):
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "DEFAULT_PURPOSE": purpose}
    assert check_settings() == []


def test_multismtp_not_a_dict(wired):
    wired.MULTISMTP = [("PURPOSES", PURPOSES)]
    assert ids(check_settings()) == ["django_multismtp.E004"]


def test_purposes_not_a_dict(wired):
    wired.MULTISMTP = {"PURPOSES": ["billing"]}
    assert ids(check_settings()) == ["django_multismtp.E004"]


@pytest.mark.skipif(not DJANGO_61, reason="MAILERS OPTIONS are new in Django 6.1")
def test_mailer_option_with_unknown_purpose(wired):
    wired.MAILERS = {
        "default": {"BACKEND": OURS},
        "newsletters": {"BACKEND": OURS, "OPTIONS": {"purpose": "newsletter"}},
        "invoices": {"BACKEND": OURS, "OPTIONS": {"purpose": "billing"}},
    }
    (error,) = check_settings()
    assert error.id == "django_multismtp.E002"
    assert "MAILERS['newsletters']" in error.msg and "'newsletter'" in error.msg


@pytest.mark.skipif(not DJANGO_61, reason="MAILERS OPTIONS are new in Django 6.1")
def test_mailer_option_with_a_typo_names_the_likely_option(wired):
    """Django raises InvalidMailer for it only when the mailer is first used; the check
    reports it at start-up, with the option meant."""
    wired.MAILERS = {
        "default": {"BACKEND": OURS, "OPTIONS": {"host": "smtp.example.com", "purpse": "x"}},
        "plain": {"BACKEND": OURS, "OPTIONS": {"host": "smtp.example.com", "zzz": 1}},
    }
    typo, unknown = check_settings()
    assert (typo.id, unknown.id) == ("django_multismtp.E006", "django_multismtp.E006")
    assert "MAILERS['default']" in typo.msg and "'purpse'" in typo.msg
    assert typo.hint.startswith("Did you mean 'purpose'?")
    assert "MAILERS['plain']" in unknown.msg and not unknown.hint.startswith("Did you")
    assert "fallback" in unknown.hint  # the known options are listed


@pytest.mark.skipif(not DJANGO_61, reason="MAILERS OPTIONS are new in Django 6.1")
def test_other_backends_options_are_not_ours_to_check(wired):
    wired.MAILERS = {
        "default": {"BACKEND": OURS},
        "other": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"purpose": "whatever"},
        },
    }
    assert check_settings() == []


# -- W003: is the backend wired at all? --------------------------------------------------


def test_backend_not_wired(wired):
    if DJANGO_61:
        wired.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}}
    else:
        wired.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    (warning,) = check_settings()
    assert warning.id == "django_multismtp.W003"
    assert "django_multismtp.backends.EmailBackend" in warning.hint


@pytest.mark.skipif(not DJANGO_61, reason="MAILERS is new in Django 6.1")
def test_mailers_with_the_default_backend_only(wired):
    """A MAILERS entry without BACKEND means Django's SMTP backend, not ours."""
    wired.MAILERS = {"default": {"OPTIONS": {"host": "smtp.example.com"}}}
    assert ids(check_settings()) == ["django_multismtp.W003"]


@pytest.mark.skipif(not DJANGO_61, reason="MAILERS is new in Django 6.1")
def test_our_backend_on_a_named_alias_is_enough(wired):
    wired.MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"},
        "accounts": {"BACKEND": "django_multismtp.backends.smtp.EmailBackend"},
    }
    assert check_settings() == []


def test_the_test_backend_counts_as_wired(wired):
    path = "django_multismtp.backends.test.EmailBackend"
    if DJANGO_61:
        wired.MAILERS = {"default": {"BACKEND": path}}
    else:
        wired.EMAIL_BACKEND = path
    assert check_settings() == []


@pytest.mark.skipif(not DJANGO_61, reason="only Django 6.1 deprecates EMAIL_BACKEND")
# Django 6.1 emits RemovedInDjango2028Warning (a PendingDeprecationWarning) for setting
# EMAIL_BACKEND; this test sets it on purpose, so it ignores exactly that message.
@pytest.mark.filterwarnings(r"ignore:The EMAIL_\w+ setting is deprecated:PendingDeprecationWarning")
def test_email_backend_style_on_django_61(wired):
    del wired.MAILERS
    wired.EMAIL_BACKEND = OURS
    assert check_settings() == []
    wired.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    assert ids(check_settings()) == ["django_multismtp.W003"]


# -- W002: a cache shared between processes ----------------------------------------------


def test_locmem_cache_warns(wired):
    wired.CACHES = {"default": {"BACKEND": LOCMEM}}
    (warning,) = check_rate_limit_cache()
    assert warning.id == "django_multismtp.W002"
    assert "LocMemCache" in warning.msg


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.filebased.FileBasedCache",
        "django.core.cache.backends.dummy.DummyCache",
    ],
)
def test_other_unshared_caches_warn(wired, backend):
    wired.CACHES = {"default": {"BACKEND": backend, "LOCATION": "somewhere"}}
    assert ids(check_rate_limit_cache()) == ["django_multismtp.W002"]


@pytest.mark.parametrize(
    "cache",
    [
        {"BACKEND": REDIS, "LOCATION": "redis://127.0.0.1:6379/1"},
        {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": "127.0.0.1:11211",
        },
        # A table in the database every process uses: shared.
        {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"},
    ],
    ids=["redis", "memcached", "database"],
)
def test_shared_cache_does_not_warn(wired, cache):
    wired.CACHES = {"default": cache}
    assert check_rate_limit_cache() == []


def test_ratelimit_use_cache_names_the_checked_alias(wired):
    wired.CACHES = {
        "default": {"BACKEND": LOCMEM},
        "ratelimit": {"BACKEND": REDIS, "LOCATION": "redis://127.0.0.1:6379/2"},
    }
    wired.RATELIMIT_USE_CACHE = "ratelimit"
    assert check_rate_limit_cache() == []
    wired.RATELIMIT_USE_CACHE = "default"
    assert ids(check_rate_limit_cache()) == ["django_multismtp.W002"]


def test_ratelimit_disabled_does_not_warn(wired):
    wired.CACHES = {"default": {"BACKEND": LOCMEM}}
    wired.RATELIMIT_ENABLE = False
    assert check_rate_limit_cache() == []


# -- registration ------------------------------------------------------------------------


def test_checks_are_registered_with_django(wired):
    del wired.FERNET_KEYS
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "DEFAULT_PURPOSE": "nope", "TYPO": 1}
    wired.CACHES = {"default": {"BACKEND": LOCMEM}}
    found = {m.id for m in checks.run_checks() if m.id and m.id.startswith("django_multismtp")}
    assert found == {
        "django_multismtp.W001",
        "django_multismtp.E002",
        "django_multismtp.E003",
    }
    # The per-process cache matters only in production: W002 is a deploy check.
    deploy = {m.id for m in checks.run_checks(include_deployment_checks=True)}
    assert "django_multismtp.W002" in deploy
    security = {m.id for m in checks.run_checks(tags=[checks.Tags.security])}
    assert "django_multismtp.W001" in security
    assert "django_multismtp.E002" not in security


def test_several_problems_are_reported_together(wired):
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "DEFAULT_PURPOSE": "nope", "TYPO": 1}
    wired.CACHES = {"default": {"BACKEND": LOCMEM}}
    if DJANGO_61:
        wired.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}}
    else:
        wired.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    assert ids(check_settings()) == [
        "django_multismtp.E002",
        "django_multismtp.E003",
        "django_multismtp.W003",
    ]
    assert ids(check_rate_limit_cache()) == ["django_multismtp.W002"]


# -- check --deploy: right while developing, wrong on a public site ----------------------
@pytest.fixture
def deployed(wired: Any) -> Any:
    wired.SERVER_EMAIL = "errors@example.test"
    wired.DEFAULT_FROM_EMAIL = "noreply@example.test"
    return wired


def test_a_deployable_configuration_has_no_deploy_messages(deployed):
    assert check_deployment() == []


def test_allow_internal_hosts_warns_on_deploy(deployed):
    deployed.MULTISMTP = {"PURPOSES": PURPOSES, "ALLOW_INTERNAL_HOSTS": True}
    (warning,) = check_deployment()
    assert warning.id == "django_multismtp.W005"
    assert "ALLOW_INTERNAL_HOSTS" in warning.msg


@pytest.mark.parametrize(
    ("name", "default"),
    [("SERVER_EMAIL", "root@localhost"), ("DEFAULT_FROM_EMAIL", "webmaster@localhost")],
)
def test_djangos_default_sender_addresses_warn_on_deploy(deployed, name, default):
    setattr(deployed, name, default)
    (warning,) = check_deployment()
    assert warning.id == "django_multismtp.W006"
    assert name in warning.msg and default in warning.msg


def test_deploy_checks_run_only_with_deploy(deployed):
    """A developer's machine (one process, internal hosts) is not nagged at start-up."""
    deployed.CACHES = {"default": {"BACKEND": LOCMEM}}
    deployed.MULTISMTP = {"PURPOSES": PURPOSES, "ALLOW_INTERNAL_HOSTS": True}
    del deployed.SERVER_EMAIL
    plain = ids(checks.run_checks(tags=None, include_deployment_checks=False))
    deploy = ids(checks.run_checks(include_deployment_checks=True))
    ours = {"django_multismtp.W002", "django_multismtp.W005", "django_multismtp.W006"}
    assert not ours & set(plain)
    assert ours <= set(deploy)


def test_an_unknown_log_recipients_mode_is_an_error(wired):
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "LOG_RECIPIENTS": "hash"}
    (error,) = check_settings()
    assert error.id == "django_multismtp.E008" and "'hashed'" in error.hint


# -- OAUTH_PROVIDERS ---------------------------------------------------------------------

PEM = "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"


def oauth_messages(wired: Any, providers: Any) -> list[Any]:
    wired.MULTISMTP = {"PURPOSES": PURPOSES, "OAUTH_PROVIDERS": providers}
    return check_settings()


def test_well_formed_oauth_providers_have_no_messages(wired):
    providers = {
        "microsoft": {"client_id": "app", "client_secret": "s3cr3t-value", "tenant": "contoso"},
        "google": {"client_id": "app", "private_key": PEM, "scopes": ["https://mail.google.com/"]},
        "corp": {
            "client_id": "site",
            "authorize_url": "https://sso.example.com/authorize",
            "token_url": "https://sso.example.com/token",
            "authorize_params": {"prompt": "consent"},
            "token_auth_method": "client_secret_basic",
        },
        # Development servers on this machine may speak plain http.
        "local": {"client_id": "demo", "token_url": "http://127.0.0.1:8000/o/token/"},
        "local6": {"client_id": "demo", "token_url": "http://[::1]:8000/o/token/"},
        "localhost": {"client_id": "demo", "token_url": "http://localhost:8000/o/token/"},
    }
    assert oauth_messages(wired, providers) == []


def test_oauth_providers_not_a_dict_is_an_error(wired):
    (error,) = oauth_messages(wired, [("microsoft", {})])
    assert error.id == "django_multismtp.E009" and "not a dict" in error.msg


def test_an_oauth_provider_entry_not_a_dict_is_an_error(wired):
    (error,) = oauth_messages(wired, {"microsoft": "client-id"})
    assert error.id == "django_multismtp.E009"
    assert "'microsoft'" in error.msg and "client_id" in error.hint


def test_an_unknown_key_in_an_oauth_provider_names_the_likely_one(wired):
    (error,) = oauth_messages(wired, {"google": {"clientid": "app"}})
    assert error.id == "django_multismtp.E009"
    assert "'clientid'" in error.msg and "Did you mean 'client_id'?" in error.hint


def test_a_misspelt_provider_kind_is_an_error_with_the_known_ones(wired):
    """ "microsft" would be taken for another server with no token URL: every account
    naming it would fail at its first token, months after the deploy."""
    (error,) = oauth_messages(wired, {"microsft": {"client_id": "app"}})
    assert error.id == "django_multismtp.E010"
    assert "'microsft'" in error.msg and "Did you mean 'microsoft'?" in error.hint


@pytest.mark.parametrize("name", ["corp", "generic"])
def test_another_server_without_token_url_is_an_error(wired, name):
    (error,) = oauth_messages(
        wired, {name: {"client_id": "app", "authorize_url": "https://sso.example.com/a"}}
    )
    assert error.id == "django_multismtp.E010" and "token_url" in error.msg


def test_another_server_without_client_id_warns(wired):
    (warning,) = oauth_messages(wired, {"corp": {"token_url": "https://sso.example.com/t"}})
    assert warning.id == "django_multismtp.W007" and warning.level == checks.WARNING
    assert "client_id" in warning.msg


@pytest.mark.parametrize(
    "url",
    [
        "http://sso.example.com/token",
        "http://10.0.0.5/token",
        "http://127.0.0.1.example.com/token",
        "ftp://sso.example.com/token",
        "sso.example.com/token",
    ],
)
def test_a_url_that_is_not_https_or_loopback_is_an_error(wired, url):
    (error,) = oauth_messages(wired, {"corp": {"client_id": "app", "token_url": url}})
    assert error.id == "django_multismtp.E011"
    assert repr(url) in error.msg and "127.0.0.1" in error.hint


def test_an_insecure_revoke_url_of_a_builtin_provider_is_an_error(wired):
    (error,) = oauth_messages(wired, {"google": {"revoke_url": "http://revoke.example.com/"}})
    assert error.id == "django_multismtp.E011" and "'revoke_url'" in error.msg


@pytest.mark.parametrize("scopes", [42, {"SMTP.Send": True}, ["SMTP.Send", None]])
def test_scopes_that_are_not_a_string_or_list_of_strings_are_an_error(wired, scopes):
    (error,) = oauth_messages(wired, {"microsoft": {"scopes": scopes}})
    assert error.id == "django_multismtp.E009" and "'scopes'" in error.msg


@pytest.mark.parametrize("expires", ["31/12/2027", "next year", 2027])
def test_a_client_secret_expiry_that_is_not_a_date_is_an_error(wired, expires):
    (error,) = oauth_messages(wired, {"microsoft": {"client_secret_expires": expires}})
    assert error.id == "django_multismtp.E009" and "'client_secret_expires'" in error.msg


@pytest.mark.parametrize("expires", ["2027-12-31", dt.date(2027, 12, 31)])
def test_a_client_secret_expiry_may_be_a_date_or_its_iso_text(wired, expires):
    assert oauth_messages(wired, {"microsoft": {"client_secret_expires": expires}}) == []


def test_a_scopes_list_reaches_the_token_request_as_one_string(settings):
    """The checks allow a list, so the resolver must join it (it used to send
    "['a', 'b']" as the scope)."""
    from django_multismtp.oauth import providers

    settings.MULTISMTP = {"OAUTH_PROVIDERS": {"google": {"scopes": ["a", "b"]}}}
    assert providers.resolve("google", flow="authorization_code").scopes == "a b"


@pytest.mark.parametrize("key", ["client_id", "client_secret", "token_url"])
def test_a_value_that_is_not_text_is_an_error(wired, key):
    entry: dict[str, Any] = {"client_id": "app", "token_url": "https://sso.example.com/t"}
    entry[key] = 12345
    messages = oauth_messages(wired, {"corp": entry})
    assert "django_multismtp.E009" in ids(messages)
    assert any(f"[{key!r}]" in m.msg for m in messages)


def test_unknown_authorize_params_and_token_auth_method_are_errors(wired):
    messages = oauth_messages(
        wired,
        {"google": {"authorize_params": {"prompt": 1}, "token_auth_method": "basic"}},
    )
    assert ids(messages) == ["django_multismtp.E009", "django_multismtp.E009"]
    assert "client_secret_basic" in messages[1].hint


@pytest.mark.parametrize("secret", ["…", "...", "changeme", "  SECRET "])
def test_a_placeholder_secret_copied_from_the_docs_is_an_error(wired, secret):
    (error,) = oauth_messages(wired, {"microsoft": {"client_id": "app", "client_secret": secret}})
    assert error.id == "django_multismtp.E012"
    assert "placeholder" in error.msg and "environment" in error.hint


def test_a_private_key_that_is_a_file_name_is_an_error(wired):
    (error,) = oauth_messages(wired, {"google": {"private_key": "/etc/keys/sa.json"}})
    assert error.id == "django_multismtp.E012" and "read_text" in error.hint


def test_a_secret_never_appears_in_a_check_message(wired):
    secret = "very-secret-value-1234"  # noqa: S105
    messages = oauth_messages(
        wired, {"microsft": {"client_secret": secret, "token_url": "http://x.example/t"}}
    )
    assert messages
    assert all(secret not in f"{m.msg} {m.hint}" for m in messages)
