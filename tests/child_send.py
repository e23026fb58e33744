"""``python -m tests.child_send PREFIX COUNT``: one web process sending a batch.

Prints "ready", waits for a line on stdin (so several children start sending at the
same moment), sends COUNT messages with subjects PREFIX-0..PREFIX-<COUNT-1> in one
``send_messages()`` call, and prints the outcome of each as "subject outcome".
"""

import sys

import django

django.setup()

from django.core import mail  # noqa: E402
from django.core.mail import EmailMessage  # noqa: E402


def main() -> None:
    prefix, count = sys.argv[1], int(sys.argv[2])
    backend = mail.mailers["default"] if hasattr(mail, "mailers") else mail.get_connection()
    messages = [
        EmailMessage(subject=f"{prefix}-{i}", body="limits", to=["to@example.test"])
        for i in range(count)
    ]
    print("ready", flush=True)
    sys.stdin.readline()
    backend.send_messages(messages)
    for msg in messages:
        print(msg.subject, msg.multismtp_status.outcome, flush=True)


main()
