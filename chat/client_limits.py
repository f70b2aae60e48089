"""Per-client limits in one instance: answers open at once, and requests in the last minute.

A client is a key from chat.http.access (the signed-in user, else the address). Both limits live in
this process's memory, so they hold per instance: with N instances a client may get N times as
much, and rate limiting across instances belongs in front of the app (API Management, Front Door).

Written here rather than taken from the ``limits`` package: that package counts requests in
windows but has no notion of a slot held while an answer streams, and its in-memory async storage
expires keys from a background task on wall-clock time. Two small structures on a monotonic
clock do both jobs and are easy to check: a sliding window of request times per client, and a
count of open answers per client. Memory stays bounded: a client whose window is empty and who
has no answer open is forgotten, and at most ``max_clients`` windows are kept (the least
recently seen go first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from chat.errors import ChatError

WINDOW_SECONDS = 60.0
# How long a client told "too many open answers" should wait: answers last seconds, not minutes.
STREAM_RETRY_AFTER_SECONDS = 5
MAX_CLIENTS = 100_000


class TooManyRequests(ChatError):
    """HTTP 429, with the seconds after which trying again can succeed (the Retry-After header)."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Slot:
    """One admitted request's place among its client's open answers; release it once, however it ends."""

    def __init__(self, limiter: ClientLimiter, key: str) -> None:
        self._limiter = limiter
        self._key = key
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self._key)


class ClientLimiter:
    def __init__(
        self,
        max_open: int,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.max_open = max_open
        self.per_minute = per_minute
        self._clock = clock
        self._max_clients = max_clients
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._open: dict[str, int] = {}
        self._last_sweep = clock()
        # Built once: a flooding client is refused thousands of times a second.
        self._rate_message = f"More than {per_minute} requests a minute. Try again later."
        self._open_message = f"More than {max_open} answers open at once. Wait for one to finish."

    def admit(self, key: str) -> Slot:
        """Count a request of ``key`` and hold one of its open-answer places, or raise TooManyRequests."""
        now = self._clock()
        self._sweep(now)
        times = self._recent.pop(key, None) or deque()
        self._recent[key] = times  # most recently seen last
        _forget_before(times, now - WINDOW_SECONDS)
        if len(times) >= self.per_minute:
            wait = math.ceil(times[0] + WINDOW_SECONDS - now)
            raise TooManyRequests(self._rate_message, max(wait, 1))
        times.append(now)
        while len(self._recent) > self._max_clients:
            self._recent.popitem(last=False)
        if self._open.get(key, 0) >= self.max_open:
            raise TooManyRequests(self._open_message, STREAM_RETRY_AFTER_SECONDS)
        self._open[key] = self._open.get(key, 0) + 1
        return Slot(self, key)

    def open_count(self, key: str) -> int:
        return self._open.get(key, 0)

    def tracked_clients(self) -> int:
        return len(self._recent) + len(self._open.keys() - self._recent.keys())

    def _release(self, key: str) -> None:
        remaining = self._open.get(key, 0) - 1
        if remaining > 0:
            self._open[key] = remaining
        else:
            self._open.pop(key, None)

    def _sweep(self, now: float) -> None:
        """Once a window, drop the clients whose requests have all left it."""
        if now - self._last_sweep < WINDOW_SECONDS:
            return
        self._last_sweep = now
        cutoff = now - WINDOW_SECONDS
        for key in [key for key, times in self._recent.items() if not times or times[-1] <= cutoff]:
            del self._recent[key]


def _forget_before(times: deque[float], cutoff: float) -> None:
    while times and times[0] <= cutoff:
        times.popleft()
