"""The provider preset an account was set up with: it picks the provider's own hint
for a rejected password (SendGrid's 'apikey', Microsoft's disabled basic auth...)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    # 0003_outbox as the brief asks; 0007_worker_seen too, so that the graph has one leaf
    # until the lead re-chains the branches' migrations.
    dependencies = [
        ("django_multismtp", "0008_oauth"),
    ]

    operations = [
        migrations.AddField(
            model_name="smtpaccount",
            name="preset",
            field=models.CharField(
                blank=True, default="", max_length=32, verbose_name="provider preset"
            ),
        ),
    ]
