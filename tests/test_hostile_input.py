"""Hostile and malformed input on every form of the admin and the "My SMTP settings" pages.

Each hostile value goes into every field of each form at once, and the most dangerous
values also go into each field alone (the rest of the form valid). The page
must answer 200 or 302 (never a server error), show a form error when the value is
refused, and never render the value as markup. Values a form accepts must be stored so
that the account still works (headers and SMTP commands cannot be injected).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from django_multismtp.models import SmtpAccount
from tests.factories import SmtpAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert(1)</script>"

HOSTILE: dict[str, Any] = {
    "long": "x" * 10_000,
    "long_digits": "9" * 10_000,
    "nul": "\x00",
    "rtl": "\u202etxt.exe\u202c",
    "emoji": "\U0001f4e7\U0001f525",
    "script": SCRIPT,
    "sql": "' OR 1=1 --",
    "negative": "-1",
    "huge": "99999999999999999999",
    "not_a_number": "twenty-five",
    "url": "smtp://host:25",
    "whitespace": " \t\n ",
    "crlf": "a\r\nBcc: x@y",
    "bad_choice": "no-such-choice",
    "list": ["a", "b"],
    "list_with_script": ["x", SCRIPT],
    "empty": "",
}

ADMIN_FIELDS = [
    "name",
    "description",
    "purpose",
    "owner",
    "default_for",
    "is_site_default",
    "priority",
    "from_email",
    "from_name",
    "reply_to",
    "allowed_senders",
    "preset",
    "host",
    "port",
    "security",
    "verify_certificates",
    "ca_file",
    "ehlo_hostname",
    "timeout",
    "public_host_only",
    "auth_method",
    "username",
    "password",
    "clear_password",
    "limit_per_second",
    "limit_per_minute",
    "limit_per_hour",
    "limit_per_day",
    "max_connections",
    "max_messages_per_connection",
    "max_message_size",
    "is_active",
]
SELF_SERVICE_FIELDS = [
    "preset",
    "from_email",
    "from_name",
    "reply_to",
    "host",
    "port",
    "security",
    "verify_certificates",
    "auth_method",
    "username",
    "password",
    "clear_password",
    # Not on the form: must be ignored.
    "owner",
    "purpose",
    "name",
    "public_host_only",
]
CHANGELIST = "/admin/django_multismtp/smtpaccount/"

values = pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
#: The values tried in each field alone (the full set goes into all fields at once).
WORST = ("long", "nul", "script", "crlf", "list")
worst_values = pytest.mark.parametrize("value", [HOSTILE[k] for k in WORST], ids=list(WORST))


def everywhere(fields: list[str], value: Any) -> dict[str, Any]:
    return {field: value for field in fields}


@pytest.fixture(autouse=True)
def _setup(settings):
    cache.clear()
    # The real servers and the forms' hosts are on 127.0.0.1.
    settings.MULTISMTP = {"PURPOSES": {"billing": "Billing"}, "ALLOW_INTERNAL_HOSTS": True}
    yield
    cache.clear()


def admin_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Hostile",
        "description": "",
        "purpose": "system",
        "owner": "",
        "priority": "100",
        "from_email": "noreply@example.test",
        "from_name": "",
        "reply_to": "",
        "allowed_senders": "",
        "preset": "",
        "host": "127.0.0.1",
        "port": "2525",
        "security": "none",
        "verify_certificates": "on",
        "ca_file": "",
        "ehlo_hostname": "",
        "timeout": "30",
        "auth_method": "none",
        "username": "",
        "password": "",
        "limit_per_second": "",
        "limit_per_minute": "",
        "limit_per_hour": "",
        "limit_per_day": "",
        "max_connections": "1",
        "max_messages_per_connection": "",
        "max_message_size": "",
        "is_active": "on",
    }
    data.update(overrides)
    return data


def self_service_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "preset": "",
        "from_email": "sam@example.test",
        "from_name": "Sam",
        "reply_to": "",
        "host": "127.0.0.1",
        "port": "2525",
        "security": "none",
        "verify_certificates": "on",
        "auth_method": "none",
        "username": "",
        "password": "",
    }
    data.update(overrides)
    return data


def check_page(client: Client, response) -> str:
    """The response (and the page it redirects to) is no error and holds no raw markup."""
    assert response.status_code in (200, 302), response.status_code
    bodies = [response.content.decode()]
    if response.status_code == 302:
        follow = client.get(response["Location"])
        assert follow.status_code == 200
        bodies.append(follow.content.decode())
    for body in bodies:
        assert SCRIPT not in body
    return bodies[0]


def has_errors(response) -> bool:
    context = response.context
    if context is None:
        return False
    for key in ("adminform", "form", "send_form", "confirm_form"):
        form = context.get(key)
        form = getattr(form, "form", form)
        if form is not None and getattr(form, "errors", None):
            return True
    return False


def assert_no_injection(account: SmtpAccount) -> None:
    """What was stored cannot smuggle a header or an SMTP command.

    (The user name is only ever sent base64-encoded, inside AUTH, so it is not checked.)
    """
    for field in ("host", "ehlo_hostname", "from_email", "reply_to", "from_name"):
        value = str(getattr(account, field))
        assert "\r" not in value and "\n" not in value, (field, value)
        assert "\x00" not in value, (field, value)
    assert account.port <= 65535


# -- the admin add and change forms ------------------------------------------------------


@values
def test_admin_add_form_every_field(admin_client, value):
    response = admin_client.post(CHANGELIST + "add/", admin_data(**everywhere(ADMIN_FIELDS, value)))
    check_page(admin_client, response)
    if response.status_code == 200:
        assert has_errors(response), f"{value!r}: neither saved nor refused"
        assert not SmtpAccount.objects.exists()
    else:
        assert_no_injection(SmtpAccount.objects.get())


@pytest.mark.slow
@pytest.mark.field_matrix
@pytest.mark.parametrize("field", ADMIN_FIELDS)
@worst_values
def test_admin_add_form(admin_client, field, value):
    response = admin_client.post(CHANGELIST + "add/", admin_data(**{field: value}))
    check_page(admin_client, response)
    if response.status_code == 200:
        assert has_errors(response), f"{field}={value!r}: neither saved nor refused"
        assert not SmtpAccount.objects.exists()
    else:
        account = SmtpAccount.objects.get()
        assert_no_injection(account)
        check_page(admin_client, admin_client.get(f"{CHANGELIST}{account.pk}/change/"))


@values
def test_admin_change_form(admin_client, value):
    account = SmtpAccountFactory(name="Hostile", from_email="noreply@example.test", port=2525)
    url = f"{CHANGELIST}{account.pk}/change/"
    response = admin_client.post(url, admin_data(**everywhere(ADMIN_FIELDS, value)))
    field = "every field"
    check_page(admin_client, response)
    if response.status_code == 200:
        assert has_errors(response), f"{field}={value!r}: neither saved nor refused"
    account.refresh_from_db()
    assert_no_injection(account)
    check_page(admin_client, admin_client.get(url))


@values
def test_admin_change_form_object_id(admin_client, value):
    object_id = value if isinstance(value, str) else value[0]
    response = admin_client.get(f"{CHANGELIST}{object_id}/change/".replace("\x00", "%00"))
    assert response.status_code in (200, 302, 404)


# -- the self-service form ---------------------------------------------------------------


@pytest.fixture
def sam():
    return UserFactory(username="sam", email="sam@example.test")


@pytest.fixture
def staff(sam) -> Client:
    client = Client()
    client.force_login(sam)
    return client


@values
def test_self_service_form_every_field(staff, value):
    response = staff.post("/smtp/", self_service_data(**everywhere(SELF_SERVICE_FIELDS, value)))
    check_page(staff, response)
    if response.status_code == 200:
        assert has_errors(response), f"{value!r}: neither saved nor refused"
        assert not SmtpAccount.objects.exists()
    else:
        account = SmtpAccount.objects.get()
        assert_no_injection(account)
        assert account.owner.username == "sam"


@pytest.mark.slow
@pytest.mark.field_matrix
@pytest.mark.parametrize("field", SELF_SERVICE_FIELDS)
@worst_values
def test_self_service_form(staff, field, value):
    response = staff.post("/smtp/", self_service_data(**{field: value}))
    check_page(staff, response)
    if response.status_code == 200:
        assert has_errors(response), f"{field}={value!r}: neither saved nor refused"
        assert not SmtpAccount.objects.exists()
    else:
        account = SmtpAccount.objects.get()
        assert_no_injection(account)
        assert account.owner.username == "sam"
        assert account.purpose == "system"
        assert account.public_host_only is True


@values
def test_self_service_edit(staff, sam, value):
    account = SmtpAccountFactory(owner=sam, public_host_only=True)
    fields = ["host", "from_name", "from_email", "username", "port", "owner", "purpose"]
    response = staff.post(f"/smtp/{account.pk}/", self_service_data(**everywhere(fields, value)))
    check_page(staff, response)
    if response.status_code == 200:
        assert has_errors(response)
    account.refresh_from_db()
    assert_no_injection(account)


# -- the send-code and confirm forms ----------------------------------------------------


@pytest.fixture
def own_account(sam, smtp_server) -> SmtpAccount:
    return SmtpAccountFactory.for_server(smtp_server, owner=sam, public_host_only=True)


@values
def test_self_service_send_code(staff, own_account, smtp_server, value):
    response = staff.post(f"/smtp/{own_account.pk}/send-code/", {"recipient": value})
    check_page(staff, response)
    assert response.status_code == 200
    assert has_errors(response)
    assert smtp_server.received == []


@values
def test_self_service_confirm(staff, own_account, value):
    response = staff.post(f"/smtp/{own_account.pk}/confirm/", {"code": value})
    body = check_page(staff, response)
    assert response.status_code == 200
    assert has_errors(response)
    assert own_account.verification_codes.count() == 0
    assert "is_verified" not in body


@values
def test_admin_send_code(admin_client, smtp_server, value):
    account = SmtpAccountFactory.for_server(smtp_server)
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "send_test_email",
            "_selected_action": [account.pk],
            "post": "yes",
            "recipient": value,
        },
    )
    check_page(admin_client, response)
    assert response.status_code == 200
    assert has_errors(response)
    assert smtp_server.received == []


@values
def test_admin_action_fields(admin_client, smtp_server, value):
    account = SmtpAccountFactory.for_server(smtp_server)
    for data in (
        {"action": value, "_selected_action": [account.pk]},
        {"action": "deactivate", "_selected_action": value},
        {
            "action": "send_test_email",
            "_selected_action": value,
            "post": "yes",
            "recipient": "me@example.test",
        },
    ):
        response = admin_client.post(CHANGELIST, data)
        check_page(admin_client, response)
    account.refresh_from_db()
    assert account.is_active is True
    assert smtp_server.received == []


@values
def test_admin_confirm(admin_client, smtp_server, value):
    account = SmtpAccountFactory.for_server(smtp_server)
    response = admin_client.post(f"{CHANGELIST}{account.pk}/confirm/", {"code": value})
    check_page(admin_client, response)
    assert response.status_code == 200
    assert has_errors(response)
    account.refresh_from_db()
    assert account.verified_at is None


# -- the CA file: a path on this server, checked when saved ------------------------------


@pytest.mark.parametrize(
    "problem", ["missing", "directory", "not-pem", "nul", "long"], ids=lambda p: p
)
def test_a_ca_file_that_cannot_be_used_is_refused_on_save(admin_client, tmp_path, problem):
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    path = {
        "missing": str(tmp_path / "no-such-ca.pem"),
        "directory": str(tmp_path),
        "not-pem": str(not_pem),
        "nul": f"{tmp_path}/ca\x00.pem",
        "long": "/" + "x" * 499,
    }[problem]
    response = admin_client.post(CHANGELIST + "add/", admin_data(ca_file=path))
    check_page(admin_client, response)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "ca_file" in errors, errors
    assert not SmtpAccount.objects.exists()


def test_a_ca_file_is_accepted_when_it_holds_certificates(admin_client, tls_files):
    response = admin_client.post(
        CHANGELIST + "add/", admin_data(ca_file=f" {tls_files.cert_path} ")
    )
    assert response.status_code == 302
    assert SmtpAccount.objects.get().ca_file == tls_files.cert_path


def test_the_model_refuses_a_missing_ca_file(tmp_path):
    from django.core.exceptions import ValidationError

    account = SmtpAccountFactory.build(ca_file=str(tmp_path / "gone.pem"))
    with pytest.raises(ValidationError) as caught:
        account.full_clean(exclude=["owner", "default_for"])
    assert "gone.pem" in str(caught.value.message_dict["ca_file"])
