import pytest
from django.core import mail

from tests.conftest import USERS
from tests.factories import SmtpAccountFactory


@pytest.mark.django_db
def test_send_mail_goes_through_the_site_default(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="main", is_site_default=True)
    assert mail.send_mail("Hi", "Body", None, ["to@example.test"]) == 1
    (received,) = smtp_server.wait_for(1)
    assert received.rcpt_tos == ["to@example.test"]


@pytest.mark.django_db
@pytest.mark.parametrize("auth", ["plain", "login", "cram-md5", "auto"])
def test_starttls_auth(mailer, starttls_server, auth):
    SmtpAccountFactory.for_server(
        starttls_server, name="tls", auth_method=auth, username="alice", password=USERS["alice"]
    )
    assert mail.send_mail("Hi", "Body", None, ["to@example.test"]) == 1
    (received,) = starttls_server.wait_for(1)
    assert received.login == "alice" and received.tls
