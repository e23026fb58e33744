"""The outbox in the admin: statuses a person can read, filters, retry now and cancel."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client

from django_multismtp import worker
from django_multismtp.models import OutboxMessage
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import get_mailer
from tests.smtp_servers import Fault
from tests.test_outbox import message

pytestmark = pytest.mark.django_db

OUTBOX = "/admin/django_multismtp/outboxmessage/"


@pytest.fixture
def rows(settings, mailer, smtp_server, clock):  # type: ignore[no-untyped-def]
    """One row per status: queued (after a 451), sending, sent, failed, cancelled."""
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Mailbox busy", on_message=1))
    get_mailer().send_messages([message("queued")])
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always"}
    get_mailer().send_messages([message(s) for s in ("sending", "sent", "failed", "cancelled")])
    by_subject = {row.subject: row for row in OutboxMessage.objects.all()}
    OutboxMessage.objects.filter(subject="sending").update(
        locked_by="web1:42:abcd", locked_until=clock() + dt.timedelta(minutes=5)
    )
    OutboxMessage.objects.filter(subject="sent").update(status="sent", sent_at=clock())
    OutboxMessage.objects.filter(subject="failed").update(
        status="failed", attempts=10, last_error="Gave up after 10 attempts. 451 busy"
    )
    OutboxMessage.objects.filter(subject="cancelled").update(status="cancelled")
    return by_subject


def listed(client: Client, query: str = "") -> list[str]:
    response = client.get(OUTBOX + query)
    assert response.status_code == 200
    return sorted(row.subject for row in response.context["cl"].result_list)


def act(client: Client, action: str, *pks: object) -> list[str]:
    response = client.post(
        OUTBOX, {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_list_shows_status_attempts_next_attempt_and_last_error(admin_client, rows):
    html = admin_client.get(OUTBOX).content.decode()
    for status in ("queued", "sending", "sent", "failed", "cancelled"):
        assert f"multismtp-status-{status}" in html
    assert "451 4.3.0 Mailbox busy" in html  # the queued row's last error
    assert "Gave up after 10 attempts" in html


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", ["queued"]),
        ("sending", ["sending"]),
        ("sent", ["sent"]),
        ("failed", ["failed"]),
        ("cancelled", ["cancelled"]),
    ],
)
def test_status_filter(admin_client, rows, status, expected):
    assert listed(admin_client, f"?status={status}") == expected


def test_search_by_recipient_and_message_id(admin_client, rows):
    assert len(listed(admin_client, "?q=to@example.test")) == 5
    assert listed(admin_client, f"?q={rows['failed'].message_id.strip('<>')}") == ["failed"]


def test_the_detail_page_is_read_only_and_links_to_the_log(admin_client, rows):
    row = rows["queued"]
    page = admin_client.get(f"{OUTBOX}{row.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="_save"' not in body
    assert "Attempts of this message" in body
    assert admin_client.post(f"{OUTBOX}{row.pk}/change/", {"status": "sent"}).status_code == 403
    assert admin_client.get(OUTBOX + "add/").status_code == 403


def test_retry_now_makes_queued_and_failed_rows_due_and_a_worker_sends_them(
    admin_client, rows, smtp_server, clock
):
    failed, sent = rows["failed"], rows["sent"]
    notes = act(admin_client, "retry_now", failed.pk, sent.pk)
    assert notes == [
        "1 message(s) will be sent by the next worker run. "
        "1 sent or cancelled message(s) were left alone."
    ]
    failed.refresh_from_db()
    assert (failed.status, failed.next_attempt_at) == ("queued", clock())
    worker.drain()
    subjects = sorted(str(r.message()["Subject"]) for r in smtp_server.received)
    assert "failed" in subjects
    failed.refresh_from_db()
    assert failed.status == "sent"


def test_cancel_stops_a_row_from_being_sent(admin_client, rows, smtp_server, clock):
    queued, sent = rows["queued"], rows["sent"]
    notes = act(admin_client, "cancel", queued.pk, sent.pk)
    assert notes == [
        "1 message(s) cancelled. 1 already sent or cancelled message(s) were left alone."
    ]
    clock.advance(hours=1)
    worker.drain()
    assert "queued" not in [str(r.message()["Subject"]) for r in smtp_server.received]
    queued.refresh_from_db()
    assert queued.status == "cancelled"


@pytest.mark.parametrize("selection", ["abc", "1 OR 1=1", "99999999999999999999"])
def test_a_forged_selection_changes_nothing(admin_client, rows, selection):
    response = admin_client.post(
        OUTBOX, {"action": "cancel", "_selected_action": [selection]}, follow=True
    )
    assert response.status_code == 200
    assert OutboxMessage.objects.filter(status="cancelled").count() == 1


def test_view_only_staff_see_the_outbox_but_cannot_act(rows):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client = Client()
    client.force_login(viewer)
    assert len(listed(client)) == 5
    response = client.post(
        OUTBOX, {"action": "cancel", "_selected_action": [str(rows["queued"].pk)]}
    )
    assert OutboxMessage.objects.get(pk=rows["queued"].pk).status == "queued"
    assert response.status_code in (200, 302)


# -- a sent row reads as sent ---------------------------------------------------------------


def test_a_sent_row_shows_no_error_no_next_attempt_and_counts_its_tries(admin_client, rows):
    """Before: "attempts 0", "reached its sending limit" and a next attempt on a sent row."""
    OutboxMessage.objects.filter(subject="sent").update(
        smtp_attempts=1, deferrals=2, last_error="Account A reached its sending limit"
    )
    response = admin_client.get(OUTBOX + "?status=sent")
    html = response.content.decode()
    (row,) = response.context["cl"].result_list
    model_admin = response.context["cl"].model_admin
    assert model_admin.tries(row) == "1 SMTP attempt, 2 deferrals"
    assert model_admin.next_attempt(row) == "-"
    assert model_admin.last_error_short(row) == ""
    assert "sending limit" not in html
    queued = OutboxMessage.objects.get(subject="queued")
    assert queued.next_attempt_at.strftime("%H:%M:%S") in model_admin.next_attempt(queued)
    assert "451 4.3.0 Mailbox busy" in model_admin.last_error_short(queued)
    detail = admin_client.get(f"{OUTBOX}{row.pk}/change/").content.decode()
    assert "Failed passes (count toward OUTBOX_MAX_ATTEMPTS)" in detail
    assert "Deferrals (no account could send yet" in detail
    assert "<label>Attempts:</label>" not in detail


def test_long_subjects_are_cut_between_words_with_the_whole_in_a_tooltip(admin_client, rows):
    subject = "Your invoice for the period " + "from January to December " * 4
    OutboxMessage.objects.filter(subject="sent").update(subject=subject)
    html = admin_client.get(OUTBOX).content.decode()
    whole = " ".join(subject.split())
    assert f'title="{whole}"' in html
    assert "Your invoice for the period\u2026" in html
