"""Account hints become unambiguous: queued mail keeps its account by primary key, and
account names can no longer be all digits (a digit hint means a primary key).

Before this migration a name such as "1" could take the mail hinted by primary key 1
(the outbox stored hints as text, matched by name *or* key). In order:

1. Accounts whose name is all digits (or empty) are renamed "account-<name>" (with a
   number added if that is taken), as the model now refuses such names.
2. The model's validator and a database check constraint refuse them from now on.
3. Outbox rows get ``hinted_account`` (the account's primary key) from their text hint:
   digits that are an existing account's primary key become that key; another text
   that is an existing account's name becomes that account's key. Any other hint is
   left as text and unresolved, and the worker reports the missing account as before.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models.functions import Cast, Length, Replace
from django.db.models.lookups import GreaterThan

import django_multismtp.models.account

BATCH = 500


def _is_digits(text):
    return text.isascii() and text.isdigit()


def _without_digits(expression):
    for digit in "0123456789":
        expression = Replace(expression, models.Value(digit), models.Value(""))
    return expression


def rename_digit_names(apps, schema_editor):
    SmtpAccount = apps.get_model("django_multismtp", "SmtpAccount")
    db = schema_editor.connection.alias
    accounts = SmtpAccount.objects.using(db)
    for account in accounts.order_by("pk").only("pk", "name"):
        text = account.name.strip()
        if text and not _is_digits(text):
            continue
        base = f"account-{text or account.pk}"[:100]
        name, number = base, 1
        while accounts.filter(name=name).exists():
            number += 1
            suffix = f"-{number}"
            name = base[: 100 - len(suffix)] + suffix
        accounts.filter(pk=account.pk).update(name=name)


def resolve_outbox_hints(apps, schema_editor):
    SmtpAccount = apps.get_model("django_multismtp", "SmtpAccount")
    OutboxMessage = apps.get_model("django_multismtp", "OutboxMessage")
    db = schema_editor.connection.alias
    names = dict(SmtpAccount.objects.using(db).values_list("pk", "name"))
    by_name = {name: pk for pk, name in names.items()}
    rows = (
        OutboxMessage.objects.using(db)
        .exclude(account_hint="")
        .filter(hinted_account__isnull=True)
        .only("pk", "account_hint")
    )
    changed = []
    for row in rows.iterator(chunk_size=BATCH):
        text = row.account_hint
        if _is_digits(text.strip()):
            pk = int(text.strip()) if len(text.strip()) <= 20 else None
            pk = pk if pk in names else None
        else:
            pk = by_name.get(text)
        if pk is None:
            continue  # unresolved: kept as text, reported by the worker
        row.hinted_account_id, row.account_hint = pk, names[pk][:100]
        changed.append(row)
        if len(changed) >= BATCH:
            OutboxMessage.objects.using(db).bulk_update(changed, ["hinted_account", "account_hint"])
            changed = []
    if changed:
        OutboxMessage.objects.using(db).bulk_update(changed, ["hinted_account", "account_hint"])


def unresolve_outbox_hints(apps, schema_editor):
    """Back to text hints: the primary key as digits (no name is all digits now)."""
    OutboxMessage = apps.get_model("django_multismtp", "OutboxMessage")
    db = schema_editor.connection.alias
    rows = OutboxMessage.objects.using(db).filter(hinted_account__isnull=False)
    rows.update(account_hint=Cast("hinted_account_id", models.CharField()))


class Migration(migrations.Migration):
    dependencies = [
        ("django_multismtp", "0004_reply_protocol_error"),
    ]

    operations = [
        migrations.RunPython(rename_digit_names, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="smtpaccount",
            name="name",
            field=models.CharField(
                max_length=100,
                unique=True,
                validators=[django_multismtp.models.account.validate_account_name],
                verbose_name="name",
            ),
        ),
        migrations.AddConstraint(
            model_name="smtpaccount",
            constraint=models.CheckConstraint(
                condition=GreaterThan(Length(_without_digits(models.F("name"))), 0),
                name="multismtp_account_name_not_digits",
                violation_error_message=(
                    "An account name cannot be only digits: numbers are how mail names an "
                    "account by its id. Add a letter."
                ),
            ),
        ),
        migrations.AddField(
            model_name="outboxmessage",
            name="hinted_account",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="django_multismtp.smtpaccount",
                verbose_name="hinted account",
            ),
        ),
        migrations.RunPython(resolve_outbox_hints, unresolve_outbox_hints),
    ]
