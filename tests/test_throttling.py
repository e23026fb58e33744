"""Rate limits on verification codes (``django_multismtp.throttling``): per client IP
and, for a signed-in user, per user, each counted separately for sending and for
confirming codes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.test import RequestFactory

from django_multismtp.throttling import too_many


@pytest.fixture(autouse=True)
def fresh_counts(settings):
    settings.MULTISMTP = {**settings.MULTISMTP, "VERIFICATION_SEND_RATE": "3/h"}
    settings.MULTISMTP["VERIFICATION_CONFIRM_RATE"] = "2/h"
    cache.clear()
    yield
    cache.clear()


class User:
    """A signed-in user as django-ratelimit's ``user`` key sees it."""

    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


def request(ip: str, user: object = None):
    made = RequestFactory().post("/", REMOTE_ADDR=ip)
    made.user = user if user is not None else AnonymousUser()
    return made


def attempts(requests) -> list[bool]:
    return [too_many(req, "send") for req in requests]


def test_a_visitor_may_send_as_many_codes_as_the_rate_allows():
    assert attempts([request("198.51.100.1")] * 4) == [False, False, False, True]


def test_sending_and_confirming_are_counted_apart():
    visitor = request("198.51.100.1")
    assert [too_many(visitor, "confirm") for _ in range(3)] == [False, False, True]
    assert too_many(visitor, "send") is False


def test_each_address_has_its_own_count():
    assert attempts([request("198.51.100.1")] * 3) == [False] * 3
    assert too_many(request("198.51.100.2"), "send") is False


def test_a_user_is_limited_from_any_address():
    ann = User(1)
    from_three_places = [request(f"198.51.100.{n}", ann) for n in (1, 2, 3, 4)]
    assert attempts(from_three_places) == [False, False, False, True]


def test_users_behind_one_address_share_its_limit():
    behind_nat = [request("198.51.100.1", User(n)) for n in (1, 2, 3, 4)]
    assert attempts(behind_nat) == [False, False, False, True]


def test_a_limited_user_stays_limited_from_a_fresh_address():
    ann = User(1)
    attempts([request("198.51.100.1", ann)] * 3)
    # The fresh address has room; Ann does not.
    assert too_many(request("198.51.100.9", ann), "send") is True
    assert too_many(request("198.51.100.9", User(2)), "send") is False
