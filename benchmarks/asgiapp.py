"""The ASGI app ``benchmarks/asyncsend.py`` serves with uvicorn: Django, three views and a
ticker on the server's event loop.

* ``/send/``: an async view that awaits ``asend_messages()`` of one message (a backend
  of its own from the default mailer), what the docs tell async code to do;
* ``/send-sync/``: an async view that calls plain ``send_mail()``, awaiting nothing: the
  backend sees the running loop and sends in a worker thread, but the view's coroutine
  waits for that thread, so the loop is held for the whole send (the contrast);
* ``/lag/``: what the ticker saw since the last ``/lag/`` (JSON, see
  :func:`benchmarks.ticker.summary`), and a new period starts.

The ticker starts in the ASGI lifespan's startup (Django's handler has no lifespan, so a
small wrapper answers it), so it watches the very loop uvicorn runs the views on.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

from .ticker import Ticker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings_asgi")
django_application = get_asgi_application()

from django.core.mail import EmailMessage, send_mail  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from .asyncsend import mailer  # noqa: E402

FROM_EMAIL = "bench@example.com"
TO = ["to@example.test"]
TICKER = Ticker()


async def send_async(request: HttpRequest) -> JsonResponse:
    message = EmailMessage("asyncsend", "One message from an async view.\n", FROM_EMAIL, TO)
    sent = await mailer().asend_messages([message])
    return JsonResponse({"sent": sent})


async def send_sync(request: HttpRequest) -> JsonResponse:
    sent = send_mail("asyncsend sync", "One message, sent synchronously.\n", FROM_EMAIL, TO)
    return JsonResponse({"sent": sent})


async def lag(request: HttpRequest) -> JsonResponse:
    return JsonResponse(TICKER.take())


urlpatterns = [
    path("send/", send_async),
    path("send-sync/", send_sync),
    path("lag/", lag),
]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's ASGI app, plus the lifespan protocol: the ticker starts with the server."""
    if scope["type"] != "lifespan":
        await django_application(scope, receive, send)
        return
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            TICKER.start()
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await TICKER.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
