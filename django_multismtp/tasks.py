"""Drain the outbox from the task queue a site already runs.

* Django's tasks framework (``django.tasks`` on Django 6.x, the ``django-tasks``
  backport on 5.2): :data:`send_queued_mail`, a task to enqueue or schedule, and
  :func:`wake_django_tasks` for ``MULTISMTP["OUTBOX_WAKE"]``.
* Celery: :data:`celery_send_queued_mail` (registered as
  ``django_multismtp.send_queued_mail``; Celery's ``autodiscover_tasks()`` finds it in
  this module) and :func:`wake_celery`.

Each task runs :func:`django_multismtp.worker.drain` once, which stops when nothing is
due, so a task never holds a worker slot while idle; the wake functions enqueue one
after each transaction that queued mail. Neither framework is a dependency: whatever
is not installed is simply not defined here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import worker

if TYPE_CHECKING:
    from django.tasks import task
else:
    try:
        from django.tasks import task
    except ImportError:  # Django 5.2: the django-tasks backport, if installed
        try:
            from django_tasks import task
        except ImportError:
            task = None

try:
    from celery import shared_task
except ImportError:  # Celery is optional
    shared_task = None

__all__ = ["drain_outbox", "wake_celery", "wake_django_tasks"]


def drain_outbox(batch_size: int | None = None, max_seconds: float | None = None) -> dict[str, int]:
    """Send what is due; return the counts (JSON-serialisable, as task results must be)."""
    result = worker.drain(batch_size=batch_size, max_seconds=max_seconds)
    return {
        "sent": result.sent,
        "retrying": result.retrying,
        "failed": result.failed,
        "cancelled": result.cancelled,
    }


if task is not None:

    @task()
    def send_queued_mail(
        batch_size: int | None = None, max_seconds: float | None = None
    ) -> dict[str, int]:
        """Django task: drain the outbox once."""
        return drain_outbox(batch_size=batch_size, max_seconds=max_seconds)

    __all__ += ["send_queued_mail"]


def wake_django_tasks() -> Any:
    """``OUTBOX_WAKE`` for Django's tasks framework: enqueue one drain."""
    if task is None:
        raise RuntimeError(
            "Django's tasks framework is not available: use Django 6 or install "
            "django-tasks, or choose another OUTBOX_WAKE."
        )
    return send_queued_mail.enqueue()


if shared_task is not None:

    @shared_task(name="django_multismtp.send_queued_mail", ignore_result=True)  # type: ignore[untyped-decorator,unused-ignore]
    def celery_send_queued_mail(
        batch_size: int | None = None, max_seconds: float | None = None
    ) -> dict[str, int]:
        """Celery task: drain the outbox once."""
        return drain_outbox(batch_size=batch_size, max_seconds=max_seconds)

    __all__ += ["celery_send_queued_mail"]


def wake_celery() -> Any:
    """``OUTBOX_WAKE`` for Celery: enqueue one drain."""
    if shared_task is None:
        raise RuntimeError("Celery is not installed: install it or choose another OUTBOX_WAKE.")
    return celery_send_queued_mail.delay()
