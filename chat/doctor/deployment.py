"""Checks of a deployed app from the outside: health, page, auth mode, CORS, streaming end to end.

The streaming check times each NDJSON line as it arrives. The app writes its first line before
any model call, so an unbuffered path shows lines spread over the answer's time; a proxy that
buffers delivers them all at the end. Such a proxy is named (from the host name or the headers
it adds) with the setting that stops it buffering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx2
import orjson

from chat.doctor.report import Check, fail, ok, skip, warn

TIMEOUT_SECONDS = 60.0
QUESTION = "What do the documents cover? Answer in one sentence."
# Lines arriving within this share of the whole response's time count as arriving at once.
BUFFERED_SHARE = 0.1
# Below this total time the spread of lines says nothing about buffering.
MEASURABLE_SECONDS = 0.2


@dataclass(frozen=True)
class Proxy:
    name: str
    fix: str


STATIC_WEB_APPS = Proxy(
    "Azure Static Web Apps (linked backend)",
    "call the function app's own URL for /api/chat/stream (allow the page's origin with AZURE_CORS_ALLOWED_ORIGINS), "
    "or serve the page from the function app, which streams",
)
API_MANAGEMENT = Proxy(
    "Azure API Management",
    'add <forward-request buffer-response="false" /> to the API\'s backend policy',
)
FRONT_DOOR = Proxy(
    "Azure Front Door",
    "turn off caching and compression on the route of /api/chat/stream",
)
UNKNOWN_PROXY = Proxy(
    "a proxy between you and the app",
    "make it pass responses through unbuffered (nginx: proxy_buffering off; the app sends X-Accel-Buffering: no)",
)
_HOST_SUFFIXES = {".azurestaticapps.net": STATIC_WEB_APPS, ".azure-api.net": API_MANAGEMENT, ".azurefd.net": FRONT_DOOR}


def identify_proxy(url: str, headers: httpx2.Headers) -> Proxy:
    """Who stands between the client and the app, from the URL's host or the headers it adds."""
    host = urlsplit(url).hostname or ""
    for suffix, proxy in _HOST_SUFFIXES.items():
        if host.endswith(suffix):
            return proxy
    if any(name.lower().startswith("ocp-apim-") for name in headers):
        return API_MANAGEMENT
    if "x-azure-ref" in headers:
        return FRONT_DOOR
    if "via" in headers:
        return Proxy(f"the proxy {headers['via']!r} (its Via header)", UNKNOWN_PROXY.fix)
    return UNKNOWN_PROXY


@dataclass
class StreamTiming:
    """When each line of a streamed answer arrived, in seconds from the request."""

    status: int
    headers: httpx2.Headers
    arrivals: list[float] = field(default_factory=list)
    last: dict[str, object] = field(default_factory=dict)
    total: float = 0.0

    @property
    def spread(self) -> float:
        return self.arrivals[-1] - self.arrivals[0] if self.arrivals else 0.0


async def timed_stream(http: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> StreamTiming:
    body = {"messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    async with http.stream("POST", f"{url}/api/chat/stream", json=body, headers=headers) as response:
        timing = StreamTiming(response.status_code, response.headers)
        if response.status_code != 200:
            await response.aread()
            return timing
        async for raw in response.aiter_lines():
            if raw.strip():
                timing.arrivals.append(time.perf_counter() - started)
                timing.last = orjson.loads(raw)
    timing.total = time.perf_counter() - started
    return timing


def judge_stream(url: str, timing: StreamTiming) -> Check:
    name = "streaming"
    if timing.status != 200:
        fix = "give a function key (--key) or an Entra token for the app (--token) that the app accepts"
        return fail(name, f"/api/chat/stream answered HTTP {timing.status}", fix)
    if timing.headers.get("content-encoding"):
        encoding = timing.headers["content-encoding"]
        proxy = identify_proxy(url, timing.headers)
        detail = f"the stream arrived {encoding}-compressed, which buffers it; the app never compresses it"
        return fail(name, f"{detail}: {proxy.name} does", f"turn off compression for application/x-ndjson; {proxy.fix}")
    error = timing.last.get("error")
    if isinstance(error, dict):
        detail = f"the answer ended with an error line: {error.get('code')}: {error.get('message')}"
        return fail(name, detail, "run python -m chat.doctor with the app's settings to find the failing service")
    if not timing.arrivals or "finishReason" not in timing.last:
        return fail(name, "the stream ended without its last line", "see the app's log (a timeout or a crash)")
    figures = f"{len(timing.arrivals)} lines, first after {timing.arrivals[0]:.2f} s, last after {timing.total:.2f} s"
    if timing.total < MEASURABLE_SECONDS or len(timing.arrivals) < 2:
        return ok(name, f"{figures} (too fast to tell whether a proxy buffers)")
    if timing.spread < BUFFERED_SHARE * timing.total:
        proxy = identify_proxy(url, timing.headers)
        return fail(name, f"{figures}: all at once, so {proxy.name} buffers the stream", proxy.fix)
    return ok(name, f"{figures}: incremental")


def judge_auth(response: httpx2.Response, *, easy_auth: bool) -> Check:
    """The auth mode, from what the chat API answers a caller without credentials.

    ``easy_auth``: whether /.auth/me exists, i.e. App Service authentication runs in front of the
    host (it answers that path; without it the host answers 404).
    """
    name = "auth mode"
    status = response.status_code
    location = response.headers.get("location", "")
    if status in (400, 413, 415):
        detail = "anonymous: the API answers anyone who has the URL"
        return warn(name, detail, "azd env set AZURE_AUTH_MODE entra (or keys), then azd provision")
    if status == 401 and "www-authenticate" in response.headers:
        return ok(name, f"entra: App Service authentication asks for {response.headers['www-authenticate'][:60]}")
    if status in (301, 302, 307) and ("login" in location or "/.auth/" in location):
        return ok(name, "entra: App Service authentication redirects callers without a token to sign in")
    if status in (401, 403, 404) and easy_auth:
        return ok(name, f"entra: App Service authentication (/.auth/me exists) answers {status} without a token")
    if status == 401:
        return ok(name, "keys: a function key is required (401 without WWW-Authenticate, no /.auth/me)")
    if status == 404:
        fix = "check the deployment log; below Python 3.13 the app setting PYTHON_ENABLE_INIT_INDEXING=1 is needed"
        return fail(name, "404 from /api/chat: the functions are not loaded", fix)
    return fail(name, f"/api/chat answered HTTP {status} to a bad request", "see the app's log")


def _credentials(key: str | None, token: str | None) -> dict[str, str]:
    headers = {"x-functions-key": key} if key else {}
    return {**headers, "authorization": f"Bearer {token}"} if token else headers


async def check_health(http: httpx2.AsyncClient, url: str) -> Check:
    response = await http.get(f"{url}/api/health")
    if response.status_code == 200:
        return ok("health", "/api/health answers 200")
    if response.status_code in (401, 403) or response.is_redirect:
        fix = "exclude /api/health from App Service authentication (excludedPaths), as infra/ does"
        return fail("health", f"/api/health answered HTTP {response.status_code}: it must stay anonymous", fix)
    status = response.json().get("status", "?") if "json" in response.headers.get("content-type", "") else "?"
    fix = "run python -m chat.doctor with the app's settings (azd env) to find the failing service"
    return fail("health", f"/api/health answered HTTP {response.status_code} ({status})", fix)


async def check_page(http: httpx2.AsyncClient, url: str) -> Check:
    response = await http.get(f"{url}/")
    if response.status_code == 200 and "is up and running" in response.text:
        fix = "set the app setting AzureWebJobsDisableHomepage=true"
        return fail("page", "/ shows the Functions host's own page", fix)
    if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/html"):
        return ok("page", "/ serves the chat page")
    return fail("page", f"/ answered HTTP {response.status_code}", "check that the function 'page' is deployed")


async def check_cors(http: httpx2.AsyncClient, url: str, origin: str | None) -> Check:
    if origin is None:
        return skip("CORS", "no --origin given (the built-in page is same-origin and needs none)")
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    response = await http.options(f"{url}/api/chat/stream", headers=headers)
    allowed = response.headers.get("access-control-allow-origin")
    if allowed in (origin, "*"):
        return ok("CORS", f"a page on {origin} may call the API")
    fix = f"azd env set AZURE_CORS_ALLOWED_ORIGINS {origin}, then azd provision (locally: Host.CORS)"
    return fail("CORS", f"the preflight from {origin} got no Access-Control-Allow-Origin for it", fix)


async def check_deployment(url: str, *, origin: str | None, key: str | None, token: str | None) -> list[Check]:
    url = url.rstrip("/")
    checks: list[Check] = []
    async with httpx2.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http:
        try:
            checks.append(await check_health(http, url))
        except httpx2.TransportError as error:
            fix = "check the URL (azd env get-value AZURE_FUNCTION_APP_URL) and that the app is running"
            return [fail("reachable", f"cannot reach {url}: {type(error).__name__}", fix)]
        checks.append(await check_page(http, url))
        checks.append(await check_cors(http, url, origin))
        easy_auth = (await http.get(f"{url}/.auth/me")).status_code != 404
        auth = judge_auth(await http.post(f"{url}/api/chat", json={}), easy_auth=easy_auth)
        checks.append(auth)
        credentials = _credentials(key, token)
        if auth.status == "ok" and not credentials:
            detail = "not checked: the API needs credentials"
            fix = "give --key (keys mode) or --token (entra mode) to check streaming"
            checks.append(warn("streaming", detail, fix))
        else:
            checks.append(judge_stream(url, await timed_stream(http, url, credentials)))
    return checks
