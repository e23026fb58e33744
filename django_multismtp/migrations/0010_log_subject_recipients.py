"""The delivery log's subject and recipients: "did bob's password-reset mail go out?"."""

from django.db import migrations, models


class Migration(migrations.Migration):
    # 0003_outbox as the brief asks; 0009_account_preset too, so that the graph has one
    # leaf until the lead re-chains the branches' migrations.
    dependencies = [
        ("django_multismtp", "0009_account_preset"),
    ]

    operations = [
        migrations.AddField(
            model_name="deliverylog",
            name="subject",
            field=models.CharField(blank=True, max_length=255, verbose_name="subject"),
        ),
        migrations.AddField(
            model_name="deliverylog",
            name="recipients",
            field=models.TextField(blank=True, verbose_name="recipients"),
        ),
    ]
