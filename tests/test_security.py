"""Issue 10 in the app: each auth mode, forged headers, per-client limits, health, headers, odd paths.

The auth level is what the Functions host indexes (read from a fresh process, as the host
imports function_app.py); the rest goes through the function app's own routes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from chat.http.devserver import create_app
from chat.localstack import running
from chat.services import close_services, get_services
from chat.settings import PROJECT_ROOT, get_settings
from tests.conftest import LocalStack, child_environment, host_server
from tests.ndjson_client import question, stream
from tests.sdk_fakes import ChatScript, EmbeddingScript

QUESTION = {"messages": [{"role": "user", "content": "Which pizza has mushroom and pineapple?"}]}
PRINCIPAL = {"X-MS-CLIENT-PRINCIPAL-ID": "0b7e7a1c-user", "X-MS-CLIENT-PRINCIPAL-NAME": "ada@contoso.com"}

INDEXED_LEVELS = """
import json, function_app
levels = {}
for function in function_app.app.get_functions():
    trigger = json.loads(function.get_raw_bindings()[0])
    levels[function.get_function_name()] = trigger["authLevel"]
print(json.dumps(levels))
"""


async def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set variables and start from new settings and services, as a restarted instance would."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    await close_services()


async def post_not_json(client: httpx.AsyncClient, route: str = "/api/chat", **headers: str) -> int:
    """A cheap request (400 before any upstream call) that still counts against the caller's budget."""
    response = await client.post(route, content=b"{", headers={"content-type": "application/json", **headers})
    return response.status_code


# --- Who may call ---


@pytest.mark.parametrize(
    ("mode", "chat_level"),
    [("anonymous", "ANONYMOUS"), ("entra", "ANONYMOUS"), ("keys", "FUNCTION"), ("every one", "ADMIN")],
)
def test_indexed_auth_levels(mode: str, chat_level: str) -> None:
    """What the host indexes. An invalid mode still indexes, with the strictest level on the chat routes."""
    result = subprocess.run(
        [sys.executable, "-c", INDEXED_LEVELS],
        env=child_environment(CHAT_AUTH_MODE=mode),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    levels = json.loads(result.stdout)
    assert levels == {
        "chat_stream": chat_level,
        "chat": chat_level,
        "health": "ANONYMOUS",
        "health_details": chat_level,
        "chat_page": "ANONYMOUS",
        "page": "ANONYMOUS",
        "assets": "ANONYMOUS",
    }
    if chat_level == "ADMIN":
        assert "chat_auth_mode" in result.stderr, "the log says why"


async def test_entra_mode_needs_the_platforms_principal(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
) -> None:
    await configure(monkeypatch, CHAT_AUTH_MODE="entra", WEBSITE_AUTH_ENABLED="true")
    for route in ("/api/chat", "/api/chat/stream"):
        refused = await client.post(route, json=QUESTION)
        assert refused.status_code == 401
        assert refused.json() == {"error": {"code": "unauthenticated", "message": "Sign in to use this API."}}
        assert refused.headers["x-content-type-options"] == "nosniff"
        answered = await client.post(route, json=QUESTION, headers=PRINCIPAL)
        assert answered.status_code == 200, answered.text
    assert (await client.get("/api/health/details")).status_code == 401
    assert (await client.get("/api/health/details", headers=PRINCIPAL)).json()["providers"]["search"]["ok"] is True
    health = await client.get("/api/health")
    assert health.json() == {"status": "unavailable"}, "anonymous, status only"


async def test_a_forged_principal_changes_nothing_without_the_platforms_authentication(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # entra mode, but the platform's authentication is off: the header is the caller's own.
    await configure(monkeypatch, CHAT_AUTH_MODE="entra")
    assert (await client.post("/api/chat", json=QUESTION, headers=PRINCIPAL)).status_code == 401
    assert (await client.get("/api/health/details", headers=PRINCIPAL)).status_code == 401
    # anonymous mode: forged ids do not buy a client a budget of its own.
    await configure(monkeypatch, CHAT_AUTH_MODE="anonymous", CHAT_REQUESTS_PER_MINUTE_PER_CLIENT="2")
    statuses = [await post_not_json(client, **{"X-MS-CLIENT-PRINCIPAL-ID": f"u{n}"}) for n in range(3)]
    assert statuses == [400, 400, 429]


async def test_signed_in_users_have_budgets_of_their_own(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await configure(monkeypatch, WEBSITE_AUTH_ENABLED="true", CHAT_REQUESTS_PER_MINUTE_PER_CLIENT="1")
    for user in ("u1", "u2"):
        assert await post_not_json(client, **{"X-MS-CLIENT-PRINCIPAL-ID": user}) == 400
    assert await post_not_json(client, **{"X-MS-CLIENT-PRINCIPAL-ID": "u1"}) == 429


# --- What one caller may spend ---


async def test_requests_per_minute_answer_429_with_retry_after(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await configure(monkeypatch, CHAT_REQUESTS_PER_MINUTE_PER_CLIENT="3")

    async def post(forwarded_for: str) -> httpx.Response:
        headers = {"content-type": "application/json", "X-Forwarded-For": forwarded_for}
        return await client.post("/api/chat/stream", content=b"{", headers=headers)

    # The client chooses the left entries; the platform appends the right-most one.
    answers = [await post(f"198.51.100.{n}, 203.0.113.5:5{n}000") for n in range(4)]
    assert [answer.status_code for answer in answers] == [400, 400, 400, 429]
    refused = answers[-1]
    assert refused.json()["error"] == {
        "code": "too_many_requests",
        "message": "More than 3 requests a minute. Try again later.",
    }
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.headers["content-type"] == "application/json"
    # Another address is another client; both routes share one budget.
    assert (await post("203.0.113.6")).status_code == 400
    assert await post_not_json(client, "/api/chat", **{"X-Forwarded-For": "203.0.113.5"}) == 429


async def test_health_checks_the_providers_once_per_cache_period(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, local_index: Path
) -> None:
    calls: list[str] = []

    async def models(client: Any) -> str:
        calls.append("models")
        await asyncio.sleep(0.01)
        return "1 models"

    monkeypatch.setattr("chat.services.list_models", models)
    now = [100.0]
    get_services().clock = lambda: now[0]
    answers = await asyncio.gather(*(client.get("/api/health") for _ in range(5)))
    await client.get("/api/health/details")
    assert [answer.json() for answer in answers] == [{"status": "ok"}] * 5
    assert len(calls) == 2, "one check (chat and embeddings) for every hit within 30 s"
    now[0] += 29
    await client.get("/api/health")
    assert len(calls) == 2
    now[0] += 1
    await client.get("/api/health")
    assert len(calls) == 4


async def test_a_slot_is_free_again_once_the_client_hangs_up(local_stack: LocalStack, tmp_path: Path) -> None:
    """Over a socket, against a local host that allows one open answer per client."""
    environment = local_stack.environment(
        CHAT_MAX_STREAMS_PER_CLIENT="1",
    )
    host, url = host_server(tmp_path, environment)
    slow = question("mushroom? [[upstream ttft=0.2 tps=5 tokens=200]]")
    with running([host]):
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", f"{url}/api/chat/stream", json=slow) as first:
                seen = []
                # Held in a name: an iterator left to the garbage collector after `break` is closed,
                # and closing it closes the connection, which would free the slot before the check.
                lines = first.aiter_lines()
                async for raw in lines:
                    seen.append(orjson.loads(raw))
                    if seen[-1]["delta"].get("content"):
                        break  # the answer is streaming: the slot is taken
                assert seen[-1]["delta"].get("content"), f"the answer should still be streaming: {seen[-1]}"
                second = await http.post(f"{url}/api/chat/stream", json=question())
                assert second.status_code == 429, (second.text, seen)
                assert second.headers["retry-after"] == "5"
            # The first client hung up (the connection closed above): its slot comes free.
            deadline = asyncio.get_running_loop().time() + 10
            while (status := (await stream(url, question("mushroom? [[upstream tps=400 tokens=3]]"))).status) == 429:
                assert asyncio.get_running_loop().time() < deadline, "the slot was never released"
                await asyncio.sleep(0.1)
            assert status == 200


# --- The page: headers, and odd paths over a real socket ---


async def test_page_and_assets_carry_a_strict_policy(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path in ("/", "/assets/js/app.js", "/assets/chat.css", "/assets/icons/check.svg"):
        response = await client.get(path)
        assert response.status_code == 200, path
        policy = dict(
            directive.strip().split(" ", 1) for directive in response.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert "unsafe" not in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    page = (await client.get("/")).text
    assert "<script>" not in page and "style=" not in page and "<style" not in page, "nothing inline"
    assert '<meta name="chat-sign-in" content="">' in page

    await configure(
        monkeypatch, CHAT_AUTH_MODE="entra", CHAT_CSP_CONNECT_ORIGINS="https://www.contoso.com,http://localhost:5173"
    )
    response = await client.get("/")
    assert (
        "connect-src 'self' https://www.contoso.com http://localhost:5173;"
        in response.headers["content-security-policy"]
    )
    assert '<meta name="chat-sign-in" content="/.auth/login/aad?post_login_redirect_uri=/">' in response.text


ODD_PATHS = [
    "/assets/%00",
    "/assets/js/app.js%00",
    "/assets/js/app.js%00.png",
    "/assets/%2e%2e/%2e%2e/function_app.py",
    "/assets/%2E%2E%2F%2E%2E%2Fhost.json",
    "/assets/..%2f..%2fhost.json",
    "/assets/..%5c..%5cfunction_app.py",
    "/assets/js%5capp.js",
    "/assets/js%2fapp.js",
    "/assets/js/../chat.css",
    "/assets/./chat.css",
    "/assets//chat.css",
    "/assets/js/app.js/",
    "/assets/%ff%fe.js",
    "/assets/" + "a" * 5000 + ".js",
    "/assets/index.html",
    "/assets/",
]


def raw_get(url: str, target: bytes) -> tuple[int, bytes]:
    """GET with the request target exactly as given (an HTTP client would normalise it)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_odd_asset_paths_are_404_over_a_socket(local_stack: LocalStack, path: str) -> None:
    status, body = raw_get(local_stack.url, path.encode())
    assert status == 404, (path, body[:200])
    assert b"import" not in body and b"routePrefix" not in body


def test_backslashes_and_raw_bytes_never_reach_a_500(local_stack: LocalStack) -> None:
    """A literal backslash, a raw NUL or a raw high byte: the HTTP parser may refuse them (400) or the app 404s."""
    for target in (b"/assets/..\\..\\function_app.py", b"/assets/js\\app.js", b"/assets/\x00", b"/assets/\xff.js"):
        status, _ = raw_get(local_stack.url, target)
        assert status in (400, 404), target
    assert raw_get(local_stack.url, b"/assets/js/app.js")[0] == 200


async def test_error_bodies_show_no_paths_or_endpoints(
    client: httpx.AsyncClient, embedding_script: EmbeddingScript, chat_script: ChatScript, tmp_path: Path
) -> None:
    """No index yet: the stream's error line says what to do, not where the server keeps its files."""
    response = await client.post("/api/chat/stream", json=QUESTION)
    last = orjson.loads(response.content.splitlines()[-1])
    assert last["error"]["code"] == "index_missing"
    assert str(tmp_path) not in response.text and "sqlite" not in response.text
    details = await client.get("/api/health/details")
    assert str(tmp_path) not in details.text
    assert "127.0.0.1" not in details.text, "no endpoint in the details either"


async def test_the_local_host_adds_its_cors_origins_to_connect_src(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"Values": {}, "Host": {"CORS": "http://localhost:5173, *"}}))
    monkeypatch.delenv("CHAT_CSP_CONNECT_ORIGINS", raising=False)  # load_local_settings sets it; monkeypatch undoes it
    app = create_app(settings_file)
    get_settings.cache_clear()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        page = await http.get("/")
    assert "connect-src 'self' http://localhost:5173;" in page.headers["content-security-policy"]
