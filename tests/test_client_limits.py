"""chat.client_limits: the sliding minute, the open-answer slots, and bounded memory, on a fake clock."""

from __future__ import annotations

import pytest

from chat.client_limits import STREAM_RETRY_AFTER_SECONDS, ClientLimiter, TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_slide() -> None:
    clock = Clock()
    limiter = ClientLimiter(max_open=100, per_minute=3, clock=clock)
    for _ in range(3):
        limiter.admit("a").release()
        clock.now += 10  # requests at 0, 10 and 20 s
    # At 30 s the oldest request (0 s) leaves the window at 60 s: wait 30 s.
    with pytest.raises(TooManyRequests) as raised:
        limiter.admit("a")
    assert raised.value.status == 429
    assert raised.value.code == "too_many_requests"
    assert raised.value.retry_after == 30
    limiter.admit("b").release()  # another client is not affected
    clock.now += 30
    limiter.admit("a").release()  # one place came free
    with pytest.raises(TooManyRequests):
        limiter.admit("a")


def test_open_answers_are_limited_and_released_once() -> None:
    limiter = ClientLimiter(max_open=2, per_minute=100, clock=Clock())
    first, second = limiter.admit("a"), limiter.admit("a")
    with pytest.raises(TooManyRequests) as raised:
        limiter.admit("a")
    assert raised.value.retry_after == STREAM_RETRY_AFTER_SECONDS
    assert limiter.open_count("a") == 2
    first.release()
    first.release()  # a second release of the same slot frees nothing more
    assert limiter.open_count("a") == 1
    third = limiter.admit("a")
    second.release()
    third.release()
    assert limiter.open_count("a") == 0


def test_idle_clients_are_forgotten_and_memory_is_capped() -> None:
    clock = Clock()
    limiter = ClientLimiter(max_open=4, per_minute=20, clock=clock, max_clients=50)
    for number in range(200):
        limiter.admit(f"client-{number}").release()
    assert limiter.tracked_clients() == 50, "the least recently seen are dropped beyond the cap"
    held = limiter.admit("streaming")
    clock.now += 61
    limiter.admit("new").release()  # the first request after a window sweeps the idle ones
    assert limiter.tracked_clients() == 2, "'new' and the client with an answer still open"
    assert limiter.open_count("streaming") == 1
    held.release()
    assert limiter.open_count("streaming") == 0
