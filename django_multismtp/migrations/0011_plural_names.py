"""Plural names that pluralise: "outbox messages", "delivery log entries", and "accounts"
(breadcrumbs read Home > SMTP accounts > Accounts). Options only: no schema change."""

from django.db import migrations


class Migration(migrations.Migration):
    # 0003_outbox like every new migration; 0010 until the lead re-chains.
    dependencies = [
        ("django_multismtp", "0010_log_subject_recipients"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="deliverylog",
            options={"ordering": ["-created_at", "-id"], "verbose_name": "delivery log entry", "verbose_name_plural": "delivery log entries"},
        ),
        migrations.AlterModelOptions(
            name="outboxmessage",
            options={"ordering": ["-created_at", "-id"], "verbose_name": "outbox message", "verbose_name_plural": "outbox messages"},
        ),
        migrations.AlterModelOptions(
            name="smtpaccount",
            options={"ordering": ["priority", "name"], "verbose_name": "SMTP account", "verbose_name_plural": "accounts"},
        ),
    ]
