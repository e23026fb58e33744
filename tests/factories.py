"""factory-boy factories for users and SMTP accounts (pointing at local test servers)."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from django_multismtp.models import SmtpAccount


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("pw")
    is_staff = True


class SmtpAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SmtpAccount
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"account-{n}")
    purpose = "system"
    from_email = factory.Sequence(lambda n: f"sender{n}@example.test")
    host = "127.0.0.1"
    port = 2525
    security = "none"
    auth_method = "none"
    verify_certificates = True

    @classmethod
    def for_server(cls, server, **kwargs):  # type: ignore[no-untyped-def]
        """An account pointing at an SMTPTestServer, matching its mode."""
        security = {"plain": "none", "starttls": "starttls", "implicit": "tls"}[server.mode]
        defaults = {"host": server.host, "port": server.port, "security": security}
        if server.tls is not None:
            defaults["ca_file"] = server.tls.cert_path
        defaults.update(kwargs)
        return cls(**defaults)
