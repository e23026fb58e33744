"""The outbox table tuned for its write pattern: every message is written three times
(queued, claimed, settled), so each write should touch as little as it can.

* Fewer indexes (see ``OutboxMessage.Meta.indexes``): a write that changes an indexed
  column adds an entry to every index of the table. The due index becomes a partial
  index of queued rows in claim order; the indexes nothing looks rows up by go (the
  single ``next_attempt_at`` one, which the due index covers; ``hinted_account``, never
  searched; ``sent_by``, set on every sent row and searched only when an account is
  deleted; ``message_id`` and its ``LIKE`` twin on PostgreSQL, which nothing searches
  by: the delivery log has the Message-IDs indexed); the user index keeps only rows
  that have a user.
* PostgreSQL only (other databases migrate without it): ``fillfactor`` leaves room in
  each page, so a claim, which changes no indexed column, is a HOT update (no index
  written at all); ``toast_tuple_target`` moves the message bytes out of the row, so the
  claim and the settlement copy a small row instead of the message.
"""

from typing import Any

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

#: Percent of each heap page filled by inserts: the rest takes the claim's new row
#: version in the same page (a HOT update).
FILLFACTOR = 50
#: Rows wider than this (bytes) have their largest values (the message) moved out.
TOAST_TUPLE_TARGET = 512


def _table(apps: Any, schema_editor: Any) -> str | None:
    if schema_editor.connection.vendor != "postgresql":
        return None
    model = apps.get_model("django_multismtp", "OutboxMessage")
    return str(schema_editor.quote_name(model._meta.db_table))


def tune_storage(apps: Any, schema_editor: Any) -> None:
    table = _table(apps, schema_editor)
    if table is not None:  # only our own table name and integers are formatted in
        schema_editor.execute(
            f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR}, "
            f"toast_tuple_target = {TOAST_TUPLE_TARGET})"
        )


def reset_storage(apps: Any, schema_editor: Any) -> None:
    table = _table(apps, schema_editor)
    if table is not None:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor, toast_tuple_target)")


class Migration(migrations.Migration):
    dependencies = [
        ("django_multismtp", "0011_plural_names"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="outboxmessage",
            name="multismtp_outbox_due",
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="hinted_account",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="django_multismtp.smtpaccount",
                verbose_name="hinted account",
            ),
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="message_id",
            field=models.CharField(max_length=255, verbose_name="Message-ID"),
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="next_attempt_at",
            field=models.DateTimeField(verbose_name="next attempt"),
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="sent_by",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="django_multismtp.smtpaccount",
                verbose_name="sent by",
            ),
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="user",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="sent as user",
            ),
        ),
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("status", "queued")),
                fields=["next_attempt_at", "id"],
                name="multismtp_outbox_queued",
            ),
        ),
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("user__isnull", False)),
                fields=["user"],
                name="multismtp_outbox_user",
            ),
        ),
        migrations.RunPython(tune_storage, reset_storage, elidable=False),
    ]
