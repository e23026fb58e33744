"""App configuration: registers the system checks and nothing heavier.

Importing models, the transport or the event loop here would slow every ``manage.py``
start and create import cycles, so ``ready()`` only wires checks and signal receivers.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MultiSMTPConfig(AppConfig):
    name = "django_multismtp"
    verbose_name = _("SMTP accounts")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
        from .oauth import notify  # noqa: F401  (the default needs-reconnect notice)
