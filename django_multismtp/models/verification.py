"""Confirmation codes that prove an account can deliver mail to a mailbox.

A code is sent *through* the account; pasting it back proves the whole path works
(credentials, TLS, the provider accepting our From). Only a keyed hash of the code is
stored, it expires, and it allows a few attempts.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class VerificationCode(models.Model):
    account = models.ForeignKey(
        "SmtpAccount", on_delete=models.CASCADE, related_name="verification_codes"
    )
    code_hash = models.CharField(max_length=128)
    sent_to = models.EmailField(_("sent to"), max_length=254)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created"))
    expires_at = models.DateTimeField(_("expires"))
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    used_at = models.DateTimeField(_("used"), null=True, blank=True)

    class Meta:
        verbose_name = _("verification code")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"code for {self.account_id} sent to {self.sent_to}"
