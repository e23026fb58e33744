from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_multismtp", "0005_outbox_account_ref"),
    ]

    operations = [
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
                db_index=True,
                max_length=20,
                verbose_name="outcome",
            ),
        ),
    ]
