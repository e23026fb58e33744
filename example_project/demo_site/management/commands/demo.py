"""``manage.py demo``: SMTP sink, example accounts and users, then the development server."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from demo_site import demo_data, oauth_server
from demo_site.sink import Sink, can_bind
from django_multismtp import worker

try:
    import fcntl
except ImportError:  # Windows: no lock, the port check below still applies
    fcntl = None  # type: ignore[assignment]


class AlreadyRunning(CommandError):
    """A demo is serving from this demo directory: a second one would take its database and
    sink log over (repoint the demo accounts to other ports, empty the log)."""


class Command(BaseCommand):
    help = (
        "Start the embedded SMTP sink, create the example SMTP accounts and users, "
        "and run the development server."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("DEMO_PORT", "8000")),
            help="Port of the development server (default: $DEMO_PORT or 8000).",
        )
        parser.add_argument(
            "--no-server",
            action="store_true",
            help="Set everything up and start the sink, then stop and exit (for tests).",
        )

    def handle(self, *args: Any, port: int, no_server: bool, **options: Any) -> None:
        # Every check comes before the first change: a demo that cannot start leaves the
        # database and the sink log of a running one as they are.
        url = f"http://127.0.0.1:{port}/"
        with _single_demo(Path(settings.DEMO_DIR) / "demo.lock", url):
            if not no_server and not can_bind(port):
                raise CommandError(
                    f"Port {port} of 127.0.0.1 is in use by another program. Choose another "
                    f"port: make demo DEMOARGS=--port=8001 (or DEMO_PORT=8001). "
                    f"Nothing was changed."
                )
            self._run(port, no_server)

    def _run(self, port: int, no_server: bool) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        sink = Sink(demo_data.mailboxes(), settings.DEMO_SINK_LOG, echo=self._echo)
        sink.start()
        stop = threading.Event()
        try:
            users = demo_data.ensure_users()
            ports = {m.account: m.port for m in sink.mailboxes}
            accounts = demo_data.ensure_accounts(ports, users)
            # The OAuth app's URLs name the port this demo serves on (settings are read on
            # every use, so the package's views see the change).
            base = f"http://127.0.0.1:{port}"
            settings.MULTISMTP["OAUTH_PROVIDERS"]["generic"].update(
                oauth_server.provider_settings(base)
            )
            accounts.append(demo_data.ensure_oauth_account(ports[demo_data.OAUTH_ACCOUNT]))
            self._banner(port, accounts, ports[demo_data.OPEN_MAILBOX], no_server=no_server)
            if not no_server:
                threading.Thread(
                    target=_outbox_worker, args=(stop,), name="outbox-worker", daemon=True
                ).start()
                call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
        finally:
            stop.set()
            sink.stop()

    def _echo(self, line: str) -> None:
        self.stdout.write(self.style.SUCCESS(line))
        self.stdout.flush()

    def _banner(self, port: int, accounts: list[Any], open_port: int, *, no_server: bool) -> None:
        base = f"http://127.0.0.1:{port}"
        out, bold = self.stdout.write, self.style.MIGRATE_HEADING
        out("")
        out(bold("django-multismtp demo"))
        out(f"  SMTP sink log:  {settings.DEMO_SINK_LOG}")
        for account in accounts:
            owner = f", owner {account.owner.username}" if account.owner_id else ""
            default = ", site default" if account.is_site_default else ""
            if account.auth_method == "xoauth2":
                out(
                    f"  SMTP sink on 127.0.0.1:{account.port}  <- account {account.name!r} "
                    f"(purpose {account.purpose}; AUTH XOAUTH2 as {account.username}, token "
                    f"checked with the demo's OAuth server at {base}/oauth/)"
                )
                continue
            out(
                f"  SMTP sink on 127.0.0.1:{account.port}  <- account {account.name!r} "
                f"(purpose {account.purpose}{default}{owner}; AUTH login {account.username})"
            )
        out(
            f"  SMTP sink on 127.0.0.1:{open_port}  <- accounts you create in the admin: "
            f"security 'None', authentication LOGIN or PLAIN, any user name, password "
            f"{demo_data.OPEN_PASSWORD!r} (another password shows the wrong-password hint)"
        )
        out(
            "  Try it: Admin > SMTP accounts > Add, test the connection, 'Send test email with "
            "a confirmation code', read the code on the sink log page, paste it."
        )
        out(
            f"  OAuth 2.0:      open {demo_data.OAUTH_ACCOUNT!r} in the admin and click 'Connect "
            f"with OAuth 2.0': the demo's own authorization server asks you to sign in as "
            f"{oauth_server.MAILBOX} / {oauth_server.MAILBOX_PASSWORD} (no Microsoft or Google "
            f"account needed); then 'Send through the OAuth mailbox' on the send page."
        )
        out("")
        if no_server:
            out("Set up done (--no-server): the sink stops now.")
            return
        out(bold("Open these in a browser:"))
        out(f"  Admin:        {base}/admin/")
        out(f"  Send page:    {base}/")
        out(f"  Sink log:     {base}/sink/")
        out(f"  My SMTP:      {base}/smtp/   (each staff user's own account)")
        out(f"  OAuth server: {base}/oauth/   (the demo's authorization server: grants, Revoke)")
        out(
            bold(
                f"  Log in as:    {demo_data.ADMIN[0]} / {demo_data.ADMIN[1]}   "
                f"(or the staff user {demo_data.ALICE[0]} / {demo_data.ALICE[1]})"
            )
        )
        out(
            "  Outbox:       a worker in this process sends queued mail every 5 s "
            "(in production: manage.py send_queued_mail --loop); see Admin > Outbox"
        )
        out("Every message the sink receives is printed here. Stop with Ctrl-C.")
        out("")
        self.stdout.flush()


@contextmanager
def _single_demo(lock_path: Path, url: str) -> Iterator[None]:
    """Hold ``lock_path`` while this demo runs, or raise :class:`AlreadyRunning`.

    An OS lock (released when the process ends, however it ends) rather than a pid file
    that a crash would leave behind. The file holds the running demo's URL for the message.
    """
    if fcntl is None:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AlreadyRunning(_already_running(lock, lock_path.parent)) from None
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"{url}\n{os.getpid()}\n")
            lock.flush()
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _already_running(lock: IO[str], demo_dir: Path) -> str:
    lock.seek(0)
    url, _, pid = lock.read().partition("\n")
    where = f" at {url.strip()} (process {pid.strip()})" if url.strip() else ""
    return (
        f"The demo is already running{where} with the data in {demo_dir}. Nothing was "
        f"changed: open it in a browser, or stop it (Ctrl-C in its terminal) before "
        f"starting another. A second demo needs its own DEMO_DIR."
    )


def _outbox_worker(stop: threading.Event) -> None:
    """What ``send_queued_mail --loop`` does, as a thread: mail over the Campaigns
    account's limit of 30 a minute waits in the outbox and goes out here."""
    try:
        worker.drain(loop=True, stop=stop.is_set, sleep=stop.wait)
    finally:
        connections.close_all()
