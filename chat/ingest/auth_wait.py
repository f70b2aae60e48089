"""Waiting out Azure role propagation: retry what Azure refuses with 401 or 403, for a bounded time.

`azd provision` grants the signed-in user its data-plane roles just before the postprovision
hook runs ingest, and Azure takes minutes to apply new role assignments (Microsoft documents up
to ten). Until then Azure AI Search answers 403 and Azure OpenAI 401. Ingest retries those with
backoff for a bounded time, then stops with a message that names the role to assign.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from chat.errors import UpstreamError

T = TypeVar("T")
DEFAULT_WAIT_SECONDS = 300.0
FIRST_PAUSE_SECONDS = 5.0
LONGEST_PAUSE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Service:
    """An Azure service whose refusals are waited out, and the roles its refusal means are missing."""

    name: str
    remedy: str


AZURE_SEARCH = Service(
    "Azure AI Search",
    "assign 'Search Index Data Contributor' (and 'Search Service Contributor' to create the index) "
    "to the signed-in user",
)
AZURE_OPENAI = Service("Azure OpenAI", "assign 'Cognitive Services OpenAI User' to the signed-in user")


class RoleMissing(Exception):
    """Azure still refused after the wait: the message names the service, the status and the roles."""


class AuthWait:
    """Runs operations, retrying those a watched service refuses (by UpstreamError code) until the time is up.

    The time counts the pauses only, so tests inject ``sleep`` and take none; every call under it
    has its own timeout. One budget serves the whole run: once it is spent, the next refusal ends it.
    """

    def __init__(
        self,
        seconds: float,
        services: Mapping[str, Service],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        report: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._seconds = seconds
        self._services = services
        self._sleep = sleep
        self._report = report
        self._waited = 0.0
        self._pause = FIRST_PAUSE_SECONDS

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await operation()
            except UpstreamError as error:
                service = self._services.get(error.code)
                if service is None:
                    raise
                status = getattr(error.__cause__, "status_code", None) or "refusal"
                left = self._seconds - self._waited
                if left <= 0:
                    waited = f" (still refused after waiting {self._waited:g} s)" if self._waited else ""
                    raise RoleMissing(f"{status} from {service.name}: {service.remedy}{waited}") from error
                pause = min(self._pause, left)
                self._report(
                    f"{status} from {service.name}: new role assignments take minutes to apply; "
                    f"retrying in {pause:g} s ({left:g} s left of --auth-wait-seconds)"
                )
                await self._sleep(pause)
                self._waited += pause
                self._pause = min(self._pause * 2, LONGEST_PAUSE_SECONDS)


NO_WAIT = AuthWait(0, {})
