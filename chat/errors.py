"""Errors the product reports to clients, each with a stable machine-readable code.

Providers translate their SDK's exceptions into these, so the pipeline and the HTTP layer
never see an SDK type, and a client always gets ``{"error": {"code", "message"}}`` with a
message that is safe to show (no stack trace, no secret, no echo of the request).
"""

from __future__ import annotations


class ChatError(Exception):
    """An error with a client-facing code, message and HTTP status (used before streaming starts)."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidRequest(ChatError):
    code = "invalid_request"
    status = 400


class NotConfigured(ChatError):
    code = "not_configured"
    status = 503


class UpstreamError(ChatError):
    """A model or search service failed, timed out or answered something unusable."""

    code = "upstream_unavailable"
    status = 502


INTERNAL_ERROR_MESSAGE = "The server could not answer this request. Try again later."
