"""Secrets (SMTP passwords, and any model field marked ``is_secret``) never leave in clear.

Known canary passwords are stored, then every page of the app is walked as a superuser,
as view-only staff and as an account owner: every admin URL of every model admin of the
app (discovered from the admin site's registry and each admin's ``get_urls()``, so a new
page is walked automatically), every admin action's pages, every self-service page. The
test fails if a canary appears in a response, in any log record (all loggers at DEBUG)
or in a serialized dump (``dumpdata`` in every format, the serializers, ``model_to_dict``,
the admin's ``LogEntry`` messages). Focused tests show each protection on its own:
view-only pages, ``dumpdata``/``loaddata``, and the error reports of views that receive
a password.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Permission
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import serializers
from django.core.cache import cache
from django.core.management import call_command
from django.core.serializers.base import DeserializationError
from django.db import connection
from django.forms.models import model_to_dict
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from django_multismtp import urls as self_service_urls
from django_multismtp.admin import STATE_FIELDS, SecretFieldsMixin, SmtpAccountAdmin
from django_multismtp.fields import SERIALIZED_PREFIX, fernet_for, secret_field_names
from django_multismtp.models import (
    DeliveryLog,
    OAuthConnection,
    OAuthState,
    OutboxMessage,
    SmtpAccount,
)
from tests.factories import SmtpAccountFactory, UserFactory
from tests.smtp_servers import SMTPTestServer
from tests.test_admin import ADD, add_data, change_data
from tests.test_self_service import form_data

pytestmark = pytest.mark.django_db

CANARY_SITE = "Canary-Site-Pw-7f3a91"
CANARY_OWNED = "Canary-Owned-Pw-2b8c44"
CANARY_TYPED = "Canary-Typed-Pw-5d6e07"
# OAuth secrets: the app's client secret and both tokens of a connected account.
CANARY_CLIENT_SECRET = "Canary-Client-Secret-9a1b2c"
CANARY_REFRESH = "Canary-Refresh-Token-3d4e5f"
CANARY_ACCESS = "Canary-Access-Token-6a7b8c"
CANARIES = (
    CANARY_SITE,
    CANARY_OWNED,
    CANARY_TYPED,
    CANARY_CLIENT_SECRET,
    CANARY_REFRESH,
    CANARY_ACCESS,
)
APP = SmtpAccount._meta.app_label
MODELS = (SmtpAccount, DeliveryLog, OutboxMessage, OAuthConnection)


def leaked(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def stored_password(account: SmtpAccount) -> bytes:
    """The password column as stored (the Fernet token), read past the model."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT password FROM django_multismtp_smtpaccount WHERE id = %s", [account.pk]
        )
        return bytes(cursor.fetchone()[0])


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def allow_internal(settings):
    settings.MULTISMTP = {"PURPOSES": {"billing": "Billing"}, "ALLOW_INTERNAL_HOSTS": True}


@pytest.fixture
def auth_server() -> Iterator[SMTPTestServer]:
    """Plain SMTP with AUTH required: the canaries are real login passwords."""
    users = {"site": CANARY_SITE, "owner": CANARY_OWNED}
    with SMTPTestServer(mode="plain", users=users, auth_required=True) as server:
        yield server


@pytest.fixture
def owner():
    return UserFactory(username="owner")


@pytest.fixture
def viewer():
    """Staff with only the *view* permission on every model of the app."""
    user = UserFactory(username="viewer")
    codenames = [f"view_{model._meta.model_name}" for model in MODELS]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def site_account(auth_server) -> SmtpAccount:
    return SmtpAccountFactory.for_server(
        auth_server, name="Site box", auth_method="plain", username="site", password=CANARY_SITE
    )


@pytest.fixture
def owned_account(auth_server, owner) -> SmtpAccount:
    return SmtpAccountFactory.for_server(
        auth_server,
        name="Owned box",
        owner=owner,
        public_host_only=True,
        auth_method="login",
        username="owner",
        password=CANARY_OWNED,
    )


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def admin_change_url(account: SmtpAccount) -> str:
    return reverse("admin:django_multismtp_smtpaccount_change", args=[account.pk])


def request_for(user, method: str = "get", path: str = "/admin/", data: Any = None):
    """A request as the admin sees it (session and messages), for calling admins directly."""
    request = getattr(RequestFactory(), method)(path, data or {})
    request.user = user
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    return request


# -- 1. never displayed ------------------------------------------------------------------


class TestNeverDisplayed:
    def test_view_only_staff_see_whether_a_password_is_set_not_the_password(
        self, viewer, site_account
    ):
        page = logged_in(viewer).get(admin_change_url(site_account))
        assert page.status_code == 200
        html = page.content.decode()
        assert 'name="_save"' not in html  # the view-only page
        assert leaked(html) == []
        assert re.search(r"<label>Password:</label>\s*<div class=\"readonly\">set</div>", html)

    def test_not_set_is_shown_as_such(self, viewer):
        account = SmtpAccountFactory(password="")
        html = logged_in(viewer).get(admin_change_url(account)).content.decode()
        assert re.search(r"<label>Password:</label>\s*<div class=\"readonly\">not set</div>", html)

    @pytest.mark.parametrize(
        "attrs",
        [
            {"readonly_fields": (*STATE_FIELDS, "password")},
            {
                "get_readonly_fields": lambda self, request, obj=None: [
                    *SmtpAccountAdmin.get_readonly_fields(self, request, obj),
                    "password",
                ]
            },
            {"has_change_permission": lambda self, request, obj=None: False},
            {"list_display": ("name", "password")},
        ],
        ids=["readonly_fields", "get_readonly_fields", "no_change_permission", "list_display"],
    )
    def test_any_read_only_display_of_a_subclassed_admin(self, admin_user, site_account, attrs):
        """A site's subclass of the admin still never shows the value."""
        model_admin = type("SiteAdmin", (SmtpAccountAdmin,), attrs)(SmtpAccount, admin.site)
        change = model_admin.change_view(request_for(admin_user), str(site_account.pk))
        listing = model_admin.changelist_view(request_for(admin_user))
        change_html = change.render().content.decode()
        list_html = listing.render().content.decode()
        assert leaked(change_html + list_html) == []
        shown = list_html if "list_display" in attrs else change_html
        assert re.search(r">set</(div|td)>", shown)

    def test_other_columns_are_kept(self, admin_user, site_account):
        column = admin.display(description="Mark")(lambda obj: "column-mark")
        attrs = {"list_display": ("name", "password", column)}
        model_admin = type("SiteAdmin", (SmtpAccountAdmin,), attrs)(SmtpAccount, admin.site)
        html = model_admin.changelist_view(request_for(admin_user)).render().content.decode()
        assert "column-mark" in html
        assert leaked(html) == []

    def test_a_read_only_inline(self, admin_user, owner, owned_account):
        """Accounts shown inline on a user's page, to staff who may not change them."""
        inline = type(
            "AccountInline",
            (SecretFieldsMixin, admin.StackedInline),
            {
                "model": SmtpAccount,
                "fk_name": "owner",
                "fields": ("name", "password"),
                "has_change_permission": lambda self, request, obj=None: False,
            },
        )
        user_admin = type("SiteUserAdmin", (SecretFieldsMixin, UserAdmin), {"inlines": [inline]})
        model_admin = user_admin(get_user_model(), admin.site)
        html = model_admin.change_view(request_for(admin_user), str(owner.pk)).render()
        html = html.content.decode()
        assert "Owned box" in html
        assert leaked(html) == []
        assert re.search(r">set</div>", html)
        # The parent page's POST hides the inline forms' (prefixed) secrets in reports.
        posted = request_for(admin_user, "post", data={"smtp_accounts-0-password": CANARY_TYPED})
        model_admin.change_view(posted, str(owner.pk))
        hidden = SafeExceptionReporterFilter().get_post_parameters(posted)
        assert hidden["smtp_accounts-0-password"] != CANARY_TYPED

    def test_a_password_the_keys_cannot_decrypt(self, viewer, site_account, settings):
        before = stored_password(site_account)
        settings.FERNET_KEYS = ["another-key"]
        html = logged_in(viewer).get(admin_change_url(site_account)).content.decode()
        assert "set, but the current FERNET_KEYS cannot decrypt it" in html
        [row] = json.loads(dump("django_multismtp.smtpaccount"))
        assert row["fields"]["password"] == SERIALIZED_PREFIX + before.decode()

    def test_the_change_form_input_carries_no_value(self, admin_client, site_account):
        html = admin_client.get(admin_change_url(site_account)).content.decode()
        field = re.search(r"<input[^>]*name=\"password\"[^>]*>", html)
        assert field is not None
        assert "value=" not in field.group(0)

    def test_a_typed_password_is_not_echoed_after_an_error(self, admin_client, site_account):
        response = admin_client.post(
            admin_change_url(site_account), {"name": "", "password": CANARY_TYPED}
        )
        assert response.status_code == 200  # the form again, with errors
        assert leaked(response.content.decode()) == []

    def test_self_service_never_echoes_it(self, allow_internal, owner, owned_account):
        client = logged_in(owner)
        page = client.get(f"/smtp/{owned_account.pk}/")
        assert leaked(page.content.decode()) == []
        response = client.post(
            f"/smtp/{owned_account.pk}/", {"from_email": "not an address", "password": CANARY_TYPED}
        )
        assert response.status_code == 200
        assert leaked(response.content.decode()) == []


# -- 2. serialized only encrypted -------------------------------------------------------


def dump(*labels: str, fmt: str = "json") -> str:
    out = io.StringIO()
    call_command("dumpdata", *labels, format=fmt, stdout=out)
    return out.getvalue()


class TestSerialization:
    @pytest.mark.parametrize("fmt", ["json", "jsonl", "xml", "python"])
    def test_serializers_carry_the_token(self, site_account, fmt):
        text = str(serializers.serialize(fmt, SmtpAccount.objects.all()))
        assert leaked(text) == []
        assert SERIALIZED_PREFIX + "gAAAAA" in text

    def test_model_to_dict(self, site_account):
        account = SmtpAccount.objects.get(pk=site_account.pk)
        data = model_to_dict(account)
        assert leaked(repr(data)) == []
        assert data["password"]  # a value (the encrypted one), and "set" stays visible
        assert account.password == CANARY_SITE  # the model itself still reads it

    def test_dumpdata_then_loaddata_keeps_the_ciphertext(self, site_account, tmp_path):
        text = dump("django_multismtp.smtpaccount")
        assert leaked(text) == []
        [row] = json.loads(text)
        token = row["fields"]["password"].removeprefix(SERIALIZED_PREFIX).encode()
        assert fernet_for(("test-key-one",)).decrypt(token) == CANARY_SITE.encode()
        SmtpAccount.objects.all().delete()
        fixture = tmp_path / "accounts.json"
        fixture.write_text(text)
        call_command("loaddata", str(fixture), verbosity=0)
        account = SmtpAccount.objects.get(name="Site box")
        assert stored_password(account) == token  # stored as dumped, not encrypted again
        assert account.password == CANARY_SITE
        assert account.server_config().password == CANARY_SITE

    def test_loaddata_with_other_keys_keeps_an_undecryptable_password(
        self, site_account, tmp_path, settings
    ):
        fixture = tmp_path / "accounts.json"
        fixture.write_text(dump("django_multismtp.smtpaccount"))
        SmtpAccount.objects.all().delete()
        settings.FERNET_KEYS = ["another-site"]
        call_command("loaddata", str(fixture), verbosity=0)
        account = SmtpAccount.objects.get(name="Site box")
        assert account.has_undecryptable_password
        assert account.server_config().password_error

    def test_a_dump_from_before_encrypted_dumps_still_loads(self, tmp_path):
        """Older dumps carried the plain password: loading encrypts it as before."""
        fixture = tmp_path / "old.json"
        SmtpAccountFactory(name="Old", password="old-plain")
        old = json.loads(dump("django_multismtp.smtpaccount"))
        old[0]["fields"]["password"] = "old-plain"
        SmtpAccount.objects.all().delete()
        fixture.write_text(json.dumps(old))
        call_command("loaddata", str(fixture), verbosity=0)
        account = SmtpAccount.objects.get(name="Old")
        assert account.password == "old-plain"
        assert stored_password(account).startswith(b"gAAAAA")

    def test_a_malformed_token_is_refused_with_a_clear_error(self, tmp_path):
        SmtpAccountFactory(name="Broken", password="x")
        rows = json.loads(dump("django_multismtp.smtpaccount"))
        rows[0]["fields"]["password"] = SERIALIZED_PREFIX + "not-a-token"
        SmtpAccount.objects.all().delete()
        fixture = tmp_path / "broken.json"
        fixture.write_text(json.dumps(rows))
        with pytest.raises(DeserializationError, match="is not an encrypted value"):
            call_command("loaddata", str(fixture), verbosity=0)

    def test_a_typed_password_that_looks_like_a_token_is_a_password(
        self, admin_client, site_account
    ):
        """Never decrypt what a person typed: a token of another account's password
        typed as a password must not make the server send that password anywhere."""
        other = SmtpAccountFactory(name="Other", password="other-secret")
        token = json.loads(dump("django_multismtp.smtpaccount"))
        typed = next(r for r in token if r["fields"]["name"] == "Other")["fields"]["password"]
        data = change_data(admin_client, site_account, password=typed)
        response = admin_client.post(admin_change_url(site_account), data)
        assert response.status_code == 302
        site_account.refresh_from_db()
        assert site_account.password == typed
        other.refresh_from_db()
        assert other.password == "other-secret"

    def test_log_entries_name_the_field_not_the_value(self, admin_client, site_account):
        data = change_data(admin_client, site_account, password=CANARY_TYPED)
        assert admin_client.post(admin_change_url(site_account), data).status_code == 302
        entry = LogEntry.objects.latest("pk")
        assert "Password" in entry.get_change_message()
        assert leaked(entry.change_message + entry.get_change_message()) == []


# -- 3. error reports -------------------------------------------------------------------


class Broken(Exception):
    pass


@pytest.fixture
def failing_save(monkeypatch):
    """Saving an account fails (a database outage), so Django reports the request."""

    def save(self, *args, **kwargs):
        raise Broken("the database went away")

    monkeypatch.setattr(SmtpAccount, "save", save)


@pytest.fixture
def request_errors(caplog):
    caplog.set_level(logging.ERROR, logger="django.request")
    return caplog


def error_report(caplog) -> str:
    """The error report Django e-mails (AdminEmailHandler) and its debug page."""
    [record] = [r for r in caplog.records if r.name == "django.request" and r.exc_info]
    reporter = ExceptionReporter(record.request, *record.exc_info, is_email=True)
    return reporter.get_traceback_text() + reporter.get_traceback_html()


class TestErrorReports:
    def test_admin_change(self, admin_user, site_account, failing_save, request_errors):
        client = Client(raise_request_exception=False)
        client.force_login(admin_user)
        data = change_data(client, site_account, password=CANARY_TYPED)
        assert client.post(admin_change_url(site_account), data).status_code == 500
        report = error_report(request_errors)
        assert "password" in report
        assert leaked(report) == []

    def test_admin_add(self, admin_user, failing_save, request_errors):
        client = Client(raise_request_exception=False)
        client.force_login(admin_user)
        assert client.post(ADD, add_data(password=CANARY_TYPED)).status_code == 500
        assert leaked(error_report(request_errors)) == []

    def test_my_smtp_settings(
        self, allow_internal, owner, owned_account, failing_save, request_errors
    ):
        client = Client(raise_request_exception=False)
        client.force_login(owner)
        data = form_data(password=CANARY_TYPED, from_email="owner@example.test")
        assert client.post(f"/smtp/{owned_account.pk}/", data).status_code == 500
        assert leaked(error_report(request_errors)) == []


# -- 4. the walk --------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Every record of every logger, formatted with its exception and extra fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record) + " " + repr(record.args) + repr(vars(record)))


@pytest.fixture
def all_logging() -> Iterator[LogCapture]:
    capture = LogCapture()
    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name, item in list(logging.root.manager.loggerDict.items())
        if isinstance(item, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger, level, disabled in saved:
            logger.removeHandler(capture)
            logger.setLevel(level)
            logger.disabled = disabled


def app_admins() -> list[Any]:
    """The model admins of the app, from the admin site's registry."""
    return [ma for model, ma in admin.site._registry.items() if model._meta.app_label == APP]


def fill(route: str, pk: Any) -> str:
    return re.sub(r"<(?:\w+:)?\w+>", str(pk), route)


def admin_urls() -> list[str]:
    """Every URL of every model admin of the app, once per stored object."""
    urls = []
    for model_admin in app_admins():
        opts = model_admin.opts
        base = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        pks = list(model_admin.model._default_manager.values_list("pk", flat=True))
        for pattern in model_admin.get_urls():
            route = str(pattern.pattern)
            if "<" in route:
                urls += [base + fill(route, pk) for pk in pks]
            else:
                urls.append(base + route)
    return urls


def self_service_urls_() -> list[str]:
    base = reverse(f"{self_service_urls.app_name}:my_settings")
    pks = list(SmtpAccount.objects.values_list("pk", flat=True))
    urls = []
    for pattern in self_service_urls.urlpatterns:
        route = str(pattern.pattern)
        urls += [base + fill(route, pk) for pk in pks] if "<" in route else [base + route]
    return urls


@pytest.fixture
def world(allow_internal, site_account, owned_account, owner, viewer, admin_user):
    """Stored canaries and a row of every model, as a running site has them."""
    now = timezone.now()
    DeliveryLog.objects.create(
        account=site_account,
        account_name=site_account.name,
        message_id="<walk@site.test>",
        outcome="sent",
        reply_code=250,
        created_at=now,
    )
    OutboxMessage.objects.create(
        message_id="<queued@site.test>",
        subject="Queued",
        from_email="noreply@site.test",
        envelope_recipients="someone@example.test",
        data=b"Subject: Queued\r\n\r\nbody\r\n",
        next_attempt_at=now,
        created_at=now,
        sent_by=site_account,
    )
    # An OAuth account, connected: its client secret and tokens are canaries too. Its
    # token endpoint is a closed port, so nothing the walk does reaches a provider.
    oauth_account = SmtpAccountFactory(
        name="OAuth box",
        host="127.0.0.1",
        port=9,
        auth_method="xoauth2",
        username="oauth@example.test",
        owner=owner,
    )
    OAuthConnection.objects.create(
        account=oauth_account,
        provider="generic",
        flow="authorization_code",
        client_id="canary-client",
        client_secret=CANARY_CLIENT_SECRET,
        authorize_url="http://127.0.0.1:9/authorize",
        token_url="http://127.0.0.1:9/token",
        refresh_token=CANARY_REFRESH,
        access_token=CANARY_ACCESS,
        access_expires_at=now + timezone.timedelta(hours=1),
        state=OAuthState.CONNECTED,
    )
    # A password changed through the admin: its LogEntry is on the history pages.
    client = logged_in(admin_user)
    data = change_data(client, site_account, password=CANARY_SITE)
    assert client.post(admin_change_url(site_account), data).status_code == 302
    assert LogEntry.objects.filter(object_id=str(site_account.pk)).exists()
    return {"superuser": admin_user, "viewer": viewer, "owner": owner}


def walk(client: Client) -> list[tuple[str, str]]:
    """Every page as this user: ("METHOD url status", response text)."""
    seen: list[tuple[str, str]] = []

    def keep(what: str, response: Any) -> None:
        hops = "".join(f" -> {url}" for url, _ in getattr(response, "redirect_chain", []))
        text = response.content.decode(errors="replace") + str(response.cookies)
        text += repr(dict(response.headers))
        seen.append((f"{what}{hops} {response.status_code}", text))

    # Forms with a typed secret and an error, so they come back with what was typed.
    for model_admin in app_admins():
        secrets = secret_field_names(model_admin.model)
        typed = dict.fromkeys(secrets, CANARY_TYPED)
        for url in admin_urls():
            if url.endswith(("/add/", "/change/")) and secrets:
                keep(f"POST {url}", client.post(url, typed, follow=True))
    # Every action: its first page, then its confirmed run.
    for model_admin in app_admins():
        opts = model_admin.opts
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        pks = list(model_admin.model._default_manager.values_list("pk", flat=True))
        superuser = request_for(UserFactory.build(is_superuser=True, is_staff=True))
        for name in model_admin.get_actions(superuser):
            data = {"action": name, "_selected_action": pks}
            keep(f"{name} {changelist}", client.post(changelist, data, follow=True))
            if name != "delete_selected":
                confirmed = {**data, "post": "yes", "recipient": "someone@example.test"}
                keep(f"{name} confirmed", client.post(changelist, confirmed, follow=True))
    # Every self-service page, shown and posted to.
    for url in self_service_urls_():
        keep(f"GET {url}", client.get(url, follow=True))
        data = {
            "from_email": "bad address",
            "password": CANARY_TYPED,
            "recipient": "someone@example.test",
            "code": "WRONG123",
        }
        keep(f"POST {url}", client.post(url, data, follow=True))
    # Every admin page, the history included (it now lists the changes above).
    site_pages = [reverse("admin:index"), reverse("admin:app_list", args=[APP])]
    for url in [*site_pages, *admin_urls()]:
        keep(f"GET {url}", client.get(url, follow=True))
    return seen


def dumps() -> list[tuple[str, str]]:
    formats = ["json", "jsonl", "xml"]
    try:
        import yaml  # noqa: F401
    except ImportError:
        pass
    else:
        formats.append("yaml")
    found = [(f"dumpdata --format {fmt}", dump(fmt=fmt)) for fmt in formats]
    for model in MODELS:
        objects = list(model._default_manager.all())
        for fmt in [*formats, "python"]:
            found.append(
                (f"serialize {fmt} {model.__name__}", str(serializers.serialize(fmt, objects)))
            )
        found += [(f"model_to_dict {obj!r}", repr(model_to_dict(obj))) for obj in objects]
    found += [
        (f"LogEntry {entry.pk}", entry.change_message + entry.get_change_message())
        for entry in LogEntry.objects.all()
    ]
    # Session data is encoded in dumps: look at it decoded.
    found += [(f"session {s.pk}", repr(s.get_decoded())) for s in Session.objects.all()]
    return found


#: On PostgreSQL the superuser's walk alone: it reads every page and dumps what the
#: others do (the dumps are the same for all three), so the others' walks, which differ
#: by permissions and not by database, run in the SQLite pass only (a minute of CPU
#: per CI run).
@pytest.mark.parametrize(
    "who",
    [
        "superuser",
        pytest.param("viewer", marks=pytest.mark.sqlite_only),
        pytest.param("owner", marks=pytest.mark.sqlite_only),
    ],
)
def test_no_canary_anywhere(all_logging, world, who, auth_server):
    # The canaries really are stored and usable: the walk logs in with them.
    assert SmtpAccount.objects.get(name="Site box").password == CANARY_SITE
    seen = walk(logged_in(world[who]))
    pages = [what for what, text in seen if text]
    assert len(pages) > 20, pages
    assert any("/history/" in what for what in pages)
    assert any("confirmed" in what for what in pages)
    found = [(what, leaked(text)) for what, text in [*seen, *dumps()] if leaked(text)]
    found += [("log", leaked(text)) for text in all_logging.texts if leaked(text)]
    assert found == []
    if who == "superuser":
        assert auth_server.auth_attempts, "the walk logged in to the server with the canaries"
        # The superuser reached every admin page (only the log and outbox have no add).
        refused = [w for w in pages if w.startswith("GET /admin") and not w.endswith(" 200")]
        assert all("/add/" in w for w in refused), refused
    if who == "viewer":
        site = SmtpAccount.objects.get(name="Site box")
        assert f"GET {admin_change_url(site)} 200" in pages  # the view-only page
