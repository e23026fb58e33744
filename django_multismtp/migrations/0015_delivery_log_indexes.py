"""Less work for the database per message a worker sends (issue #17): it writes one
delivery-log row per message, and each index of the table costs an entry per row (see
``DeliveryLog.Meta.indexes`` for why each index that is left is kept); and each log row
and each settled outbox row had its account checked by a foreign-key constraint.

* ``message_id``: the ``LIKE`` twin ``db_index`` created on PostgreSQL goes (it serves
  only case-sensitive prefix searches, and nothing makes one: the admin's search is
  ``icontains``); the plain index stays, renamed, not rebuilt (the log is the largest
  table of the app).
* ``outcome``: its index and ``LIKE`` twin give way to a partial index of the rows that
  were not sent; a filter on "sent" matches most of the table and never used it.
* ``DeliveryLog.account`` and ``OutboxMessage.sent_by`` keep their ``on_delete`` (Django
  sets them to NULL when the account is deleted) but lose their constraint in the
  database; see the fields for why.
"""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

MESSAGE_ID_INDEX = models.Index(fields=["message_id"], name="multismtp_log_message_id")


def _message_id_indexes(schema_editor: Any, table: str) -> list[str]:
    """The names of the single-column, non-unique indexes of ``message_id``."""
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    return sorted(
        name
        for name, info in constraints.items()
        if info["index"]
        and info["columns"] == ["message_id"]
        and not (info["unique"] or info["primary_key"])
    )


def keep_message_id_index(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("django_multismtp", "DeliveryLog")
    names = _message_id_indexes(schema_editor, model._meta.db_table)
    plain = [name for name in names if not name.endswith("_like")]
    for name in names:
        if name.endswith("_like"):  # only our own index names are formatted in
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")
    if plain:
        old = models.Index(fields=["message_id"], name=plain[0])
        schema_editor.rename_index(model, old, MESSAGE_ID_INDEX)
    else:
        schema_editor.add_index(model, MESSAGE_ID_INDEX)


def restore_message_id_index(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("django_multismtp", "DeliveryLog")
    schema_editor.remove_index(model, MESSAGE_ID_INDEX)
    old_field = models.CharField(max_length=255)
    old_field.set_attributes_from_name("message_id")
    new_field = models.CharField(max_length=255, db_index=True)
    new_field.set_attributes_from_name("message_id")
    schema_editor.alter_field(model, old_field, new_field)


class Migration(migrations.Migration):
    dependencies = [
        ("django_multismtp", "0014_oauth_token_health"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="deliverylog",
                    name="message_id",
                    field=models.CharField(max_length=255, verbose_name="Message-ID"),
                ),
                migrations.AddIndex(model_name="deliverylog", index=MESSAGE_ID_INDEX),
            ],
            database_operations=[
                migrations.RunPython(keep_message_id_index, restore_message_id_index),
            ],
        ),
        migrations.AlterField(
            model_name="deliverylog",
            name="account",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="deliveries",
                to="django_multismtp.smtpaccount",
                verbose_name="account",
            ),
        ),
        migrations.AlterField(
            model_name="outboxmessage",
            name="sent_by",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="django_multismtp.smtpaccount",
                verbose_name="sent by",
            ),
        ),
        migrations.AlterField(
            model_name="deliverylog",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("sent", "sent"),
                    ("throttled", "throttled"),
                    ("transient", "temporary failure"),
                    ("permanent", "refused"),
                    ("auth_failed", "authentication failed"),
                    ("tls_failed", "TLS failed"),
                    ("connection_failed", "connection failed"),
                    ("config_error", "configuration error"),
                    ("cancelled", "cancelled"),
                    ("protocol_error", "protocol error"),
                    ("deferred", "deferred"),
                ],
                max_length=20,
                verbose_name="outcome",
            ),
        ),
        migrations.AddIndex(
            model_name="deliverylog",
            index=models.Index(
                condition=models.Q(("outcome", "sent"), _negated=True),
                fields=["outcome"],
                name="multismtp_log_not_sent",
            ),
        ),
    ]
