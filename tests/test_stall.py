"""A site that queues mail but runs no worker finds out (#13).

Queued mail due for longer than OUTBOX_STALL_AFTER (15 minutes) while no worker was
seen in that time is reported by ``verify_smtp_accounts`` and as a banner on the
admin's account and outbox lists. Time moves through the ``clock`` fixture.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.core.management.base import CommandError

from django_multismtp import stall, worker
from django_multismtp.models import OutboxMessage, OutboxWorkerSeen
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer

pytestmark = pytest.mark.django_db

ACCOUNTS = "/admin/django_multismtp/smtpaccount/"
OUTBOX = "/admin/django_multismtp/outboxmessage/"


@pytest.fixture
def queueing(settings: Any, mailer: None, clock: Any, smtp_server: Any) -> Any:
    """Every message goes to the outbox; one account that works."""
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always"}
    return SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)


def queue(count: int = 1) -> None:
    messages = [EmailMessage(f"m{n}", "Body", to=["to@example.test"]) for n in range(count)]
    assert get_mailer().send_messages(messages) == count


def verify() -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("verify_smtp_accounts", stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def test_fresh_queued_mail_is_not_a_stall(queueing, clock):
    queue()
    clock.advance(minutes=14)
    assert stall.stalled(clock()) is None
    assert verify()[1] == ""


def test_mail_waiting_with_no_worker_ever_fails_verify(queueing, clock):
    queue(2)
    clock.advance(minutes=16)
    stderr = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("verify_smtp_accounts", stdout=StringIO(), stderr=stderr)
    assert str(caught.value) == "Outbox: 2 message(s) waiting with no worker."
    assert "no worker has ever been seen" in stderr.getvalue()
    assert "send_queued_mail" in stderr.getvalue()


def test_admin_lists_show_the_banner(queueing, clock, admin_client):
    queue()
    clock.advance(minutes=16)
    for url in (ACCOUNTS, OUTBOX):
        html = admin_client.get(url).content.decode()
        assert "1 queued message(s) have been waiting since" in html, url
        assert "no worker has ever been seen" in html


def test_a_worker_clears_the_stall_and_is_remembered(queueing, clock, smtp_server, admin_client):
    queue()
    clock.advance(minutes=16)
    assert stall.stalled(clock()) is not None
    assert worker.drain().sent == 1
    assert stall.last_seen() == clock()
    assert OutboxWorkerSeen.objects.count() == 1
    assert stall.stalled(clock()) is None
    assert "have been waiting since" not in admin_client.get(OUTBOX).content.decode()

    # Later mail, and the worker is gone: reported with when it was last seen.
    seen = clock()
    queue()
    clock.advance(minutes=20)
    stuck = stall.stalled(clock())
    assert stuck is not None and stuck.waiting == 1 and stuck.worker_seen == seen
    assert f"no worker has been seen since {seen.isoformat(timespec='seconds')}" in (
        stuck.message()
    )


def test_a_busy_worker_behind_a_backlog_is_not_a_stall(queueing, clock, settings):
    queue(3)
    clock.advance(minutes=30)
    batches: list[Any] = []
    # One batch of one, two rows left behind: the worker is alive, the queue is long.
    worker.drain(batch_size=1, stop=lambda: bool(batches), on_batch=batches.append)
    assert OutboxMessage.objects.filter(status="queued").count() == 2
    assert stall.stalled(clock()) is None


def test_the_threshold_is_a_setting(queueing, clock, settings):
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX_STALL_AFTER": 60}
    queue()
    clock.advance(minutes=2)
    assert stall.stalled(clock()) is not None


def test_check_database_reports_the_stall(queueing, clock):
    from django.core.checks import run_checks

    queue()
    assert [m.id for m in run_checks(databases=["default"]) if m.id.endswith("W004")] == []
    clock.advance(minutes=16)
    (warning,) = [m for m in run_checks(databases=["default"]) if m.id.endswith("W004")]
    assert "no worker has ever been seen" in warning.msg
    # Without --database the check does not touch the database.
    assert not [m for m in run_checks() if m.id.endswith("W004")]


def test_a_draining_worker_says_it_is_sending_once_a_second_not_once_a_batch(
    queueing, clock, monkeypatch
):
    """Recording that a worker is sending was one statement in six of a batch (issue
    #17): a drain records it with its first batch, then at most once per SEEN_EVERY of
    its own monotonic clock. A failure to record it stops nothing."""
    queue(5)
    ticks = iter([0.0, 0.0, 0.0, 0.4, 0.4, 0.8, 0.8, 1.2, 1.2, 1.6] + [1.6] * 50)
    seen: list[Any] = []
    monkeypatch.setattr(stall, "worker_seen", seen.append)
    assert worker.drain(batch_size=1, monotonic=lambda: next(ticks)).sent == 5
    assert len(seen) == 2  # at 0.0, and at 1.2 (a second later), not once per batch

    def down(now: Any) -> None:
        raise RuntimeError("the database went away")

    queue(2)
    monkeypatch.setattr(stall, "worker_seen", down)
    assert worker.drain(batch_size=1).sent == 2
