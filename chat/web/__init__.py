"""The static chat page: index.html at / and its assets under /assets/, served by the function app."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, JSONResponse, Response

from chat.errors import ChatError
from chat.protocol import error_body

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page changes with each deployment; let browsers revalidate instead of guessing.
CACHE_HEADERS = {"Cache-Control": "no-cache"}
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


def page() -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=CACHE_HEADERS)


def asset(path: str) -> Response:
    """A file under static/, or 404 for anything else (including paths that try to climb out)."""
    candidate = (STATIC_DIR / path).resolve()
    media_type = MEDIA_TYPES.get(candidate.suffix)
    if media_type is None or not candidate.is_relative_to(STATIC_DIR) or not candidate.is_file():
        return JSONResponse(error_body(ChatError("No such asset.", code="not_found")), status_code=404)
    return FileResponse(candidate, media_type=media_type, headers=CACHE_HEADERS)
