"""Signals sites hook into, e.g. to alert an operator or to cancel a message.

Receivers of :data:`pre_send` may raise :class:`~django_multismtp.exceptions.CancelSend`
to cancel one message without an error. The others are sent with ``send_robust``: a
failing receiver is logged and never stops delivery.
"""

from django.dispatch import Signal

#: Before a message is handed to an account's server.
#: kwargs: message, account (SmtpAccount or None for the fallback server), backend.
#: For mail sent from the outbox, message is the OutboxMessage row.
pre_send = Signal()

#: Once per message and send_messages() call or outbox pass, after failover. kwargs:
#: message (the OutboxMessage row for mail sent from the outbox), account (the one that
#: sent it, or None), status (SendStatus; outcome "queued" when the outbox will try
#: again), failure (or None)
post_send = Signal()

#: An account's state changed. kwargs: account, change ("rate_limited", "failed",
#: "failed_over", "recovered"), failure (or None), detail (text)
account_state_changed = Signal()

#: An OAuth account's refresh token was refused for good: someone must click "Connect"
#: again. kwargs: account, error (the provider's error), hint. Sent once per breakage,
#: from the thread that refreshed (do not send mail through the same account there).
oauth_needs_reconnect = Signal()
