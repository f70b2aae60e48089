"""The static chat page: index.html at / and its assets under /assets/, served by the function app.

Every file comes with a strict Content-Security-Policy: scripts and styles only from this
origin (the page has no inline script or style), no framing, API calls only to this origin and
the configured CORS origins. An asset is looked up in the list of files that exist under
static/ when the process starts, never on the file system with a path from the request: an odd
path (NUL byte, backslash, ``..``, percent-encoded anything) is simply not in the list, a 404.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, JSONResponse, Response

from chat.errors import ChatError
from chat.protocol import error_body

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
ASSETS: dict[str, Path] = {
    path.relative_to(STATIC_DIR).as_posix(): path
    for path in sorted(STATIC_DIR.rglob("*"))
    if path.suffix in MEDIA_TYPES and path.is_file()
}
# Where the page sends a user whose session is missing or over (entra mode): the platform's sign-in.
SIGN_IN_URL = "/.auth/login/aad?post_login_redirect_uri=/"
SIGN_IN_MARKER = '<meta name="chat-sign-in" content="">'
# The page changes with each deployment; let browsers revalidate instead of guessing.
CACHE_HEADERS = {"Cache-Control": "no-cache"}


def security_headers(connect_origins: tuple[str, ...] = ()) -> dict[str, str]:
    """The headers of the page and of each asset."""
    connect = " ".join(("'self'", *connect_origins))
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        **CACHE_HEADERS,
    }


def page(connect_origins: tuple[str, ...] = (), *, sign_in: bool = False) -> Response:
    """index.html; with ``sign_in`` (entra mode) it names the sign-in URL the page goes to on a 401."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if sign_in:
        html = html.replace(SIGN_IN_MARKER, f'<meta name="chat-sign-in" content="{SIGN_IN_URL}">')
    return Response(html, media_type="text/html", headers=security_headers(connect_origins))


def asset(path: str, raw_path: bytes | None = None, connect_origins: tuple[str, ...] = ()) -> Response:
    """A file under static/, or 404 for anything else.

    ``raw_path`` is the request's path as sent, when the host passes it on: asset names are plain,
    so a percent-encoded character (``%2f``, ``%2e``, ``%5c``, ``%00``) means an odd request.
    """
    found = ASSETS.get(path)
    if found is None or (raw_path is not None and b"%" in raw_path):
        headers = {"X-Content-Type-Options": "nosniff"}
        return JSONResponse(error_body(ChatError("No such asset.", code="not_found")), status_code=404, headers=headers)
    return FileResponse(found, media_type=MEDIA_TYPES[found.suffix], headers=security_headers(connect_origins))
