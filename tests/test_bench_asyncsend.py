"""The ASGI app of the async benchmark (benchmarks/asgiapp.py, which `make bench` serves
with uvicorn): its views send through our backend and its ticker runs with the server.

Behaviour only: the benchmark measures the times, these tests never do.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import AsyncClient

from benchmarks import asgiapp
from benchmarks.ticker import summary
from django_multismtp.models import DeliveryLog
from tests.factories import SmtpAccountFactory
from tests.mailers import use_mailers
from tests.smtp_servers import SMTPTestServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("benchmarks.asgiapp")]


def get(path: str) -> Any:
    response = asyncio.run(AsyncClient().get(path))
    assert response.status_code == 200, response.content
    return json.loads(response.content)


@pytest.mark.parametrize("path", ["/send/", "/send-sync/"])
def test_each_send_view_sends_one_message(
    path: str, smtp_server: SMTPTestServer, settings: Any
) -> None:
    use_mailers(settings)  # send_mail() in /send-sync/ goes through ours, not locmem
    SmtpAccountFactory.for_server(smtp_server, name="bench", is_site_default=True)

    assert get(path) == {"sent": 1}
    assert [(r.mail_from, r.rcpt_tos) for r in smtp_server.received] == [
        (asgiapp.FROM_EMAIL, asgiapp.TO)
    ]
    assert DeliveryLog.objects.filter(outcome="sent").count() == 1


def test_the_lag_view_reports_what_the_ticker_saw() -> None:
    asgiapp.TICKER.lags = [0.002, 0.004]
    assert get("/lag/") | {"cpu_ms": None} == {
        "ticks": 2,
        "median_ms": 4.0,
        "p99_ms": 4.0,
        "max_ms": 4.0,
        "over_10ms": 0,
        "cpu_ms": None,
    }
    assert get("/lag/")["ticks"] == 0  # a new period started


def test_the_ticker_runs_from_lifespan_startup_to_shutdown() -> None:
    sent: list[str] = []
    running_between: list[bool] = []

    async def receive() -> dict[str, str]:
        if not sent:
            return {"type": "lifespan.startup"}
        task = asgiapp.TICKER._task
        running_between.append(task is not None and not task.done())
        return {"type": "lifespan.shutdown"}

    async def send(event: dict[str, str]) -> None:
        sent.append(event["type"])

    asyncio.run(asgiapp.application({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert running_between == [True]
    assert asgiapp.TICKER._task is None


def test_summary_reports_the_largest_lateness_and_the_99th_percentile() -> None:
    lags = [0.0001] * 198 + [0.012, 0.25]
    assert summary(lags, cpu=0.5) == {
        "ticks": 200,
        "median_ms": 0.1,
        "p99_ms": 12.0,
        "max_ms": 250.0,
        "over_10ms": 2,
        "cpu_ms": 500.0,
    }
