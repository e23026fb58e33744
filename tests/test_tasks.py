"""The outbox drained from task queues: Django's tasks framework and a Celery worker.

Both run for real: Django's ImmediateBackend (core ``django.tasks`` on Django 6, the
django-tasks backport on 5.2) in this process, and a Celery worker in a child process on
the file-system broker (no server needed), sending to an SMTP server in this process.
"""

from __future__ import annotations

import importlib

import pytest

from django_multismtp import tasks
from django_multismtp.models import OutboxMessage
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer
from tests.processes import start, stop, wait_until
from tests.test_outbox import message


def queue_everything(settings, wake: str) -> None:  # type: ignore[no-untyped-def]
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always", "OUTBOX_WAKE": wake}


@pytest.mark.django_db
def test_django_task_drains_the_outbox_after_commit(
    settings, mailer, smtp_server, django_capture_on_commit_callbacks
):
    queue_everything(settings, "django_multismtp.tasks.wake_django_tasks")
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert get_mailer().send_messages([message("via task")]) == 1
        assert smtp_server.received == []  # nothing before the commit
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["via task"]
    assert OutboxMessage.objects.get().status == "sent"


@pytest.mark.django_db
def test_django_task_returns_the_counts(mailer, smtp_server, settings):
    queue_everything(settings, "")
    settings.MULTISMTP.pop("OUTBOX_WAKE")
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    get_mailer().send_messages([message("one"), message("two")])
    result = tasks.send_queued_mail.enqueue(batch_size=1)
    assert result.return_value == {"sent": 2, "retrying": 0, "failed": 0, "cancelled": 0}


@pytest.fixture
def celery_app(tmp_path_factory, monkeypatch):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("celery")
    for name in ("queue", "processed"):
        (folder / name).mkdir()
    monkeypatch.setenv("MULTISMTP_CELERY_DIR", str(folder))
    module = importlib.import_module("tests.celery_app")
    module = importlib.reload(module)  # bind the broker to this test's folder
    return module.app, folder


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_process_drains_the_outbox(settings, mailer, smtp_server, celery_app):
    app, folder = celery_app
    queue_everything(settings, "django_multismtp.tasks.wake_celery")
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)

    assert get_mailer().send_messages([message("via celery")]) == 1
    assert len(list((folder / "queue").iterdir())) == 1  # the task, enqueued on commit

    worker = start(
        [
            "-m",
            "celery",
            "-A",
            "tests.celery_app",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        MULTISMTP_CELERY_DIR=str(folder),
    )
    try:
        (received,) = smtp_server.wait_for(1, timeout=60)
        # The worker settles the row after the server's reply.
        wait_until(lambda: OutboxMessage.objects.filter(status="sent").exists(), what="sent")
    finally:
        stop(worker)
    assert str(received.message()["Subject"]) == "via celery"
    row = OutboxMessage.objects.get()
    assert (row.status, row.sent_by.name) == ("sent", "A")
