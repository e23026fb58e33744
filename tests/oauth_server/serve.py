"""Run the test authorization server: migrate, create the fixtures, serve on 127.0.0.1.

Usage: ``python -m tests.oauth_server.serve <fixtures.json>``; prints ``PORT <n>`` once
listening. The fixtures name users (username, password) and applications (client_id,
client_secret, grant type, redirect URIs, user for client credentials).
"""

import json
import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oauth_server.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0)
    with open(sys.argv[1]) as f:
        fixtures = json.load(f)
    from tests.oauth_server import faults

    faults.SERVICE_ACCOUNTS.update(fixtures.get("service_accounts", {}))
    for user in fixtures["users"]:
        User.objects.create_user(user["username"], password=user["password"])
    for app in fixtures["applications"]:
        Application.objects.create(
            name=app["client_id"],
            client_id=app["client_id"],
            client_secret=app["client_secret"],
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=app["grant_type"],
            redirect_uris=" ".join(app.get("redirect_uris", [])),
            user=User.objects.get(username=app["user"]) if app.get("user") else None,
            skip_authorization=False,
            algorithm="",
        )
    server = make_server(
        "127.0.0.1", 0, get_wsgi_application(), server_class=_Server, handler_class=_QuietHandler
    )
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
