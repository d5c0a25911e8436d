"""The partner API's refusals, each answered by a handler in `distiller.api.routes`."""

from __future__ import annotations

from typing import Any


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


class ApiError(Exception):
    """Any other answer than success: `status`, a JSON `body` (always with "error") and headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body.get("error")))
        self.status = status
        self.body = body
        self.headers = headers or {}


class FieldErrors(ApiError):
    """400 `{"error": ..., "fields": {name: reason}}`: the request's values that are wrong, each named;
    `error` lists them on one line ("vin: ...; year: ...")."""

    def __init__(self, fields: dict[str, str]) -> None:
        error = "; ".join(f"{name}: {reason}" for name, reason in fields.items()) or "invalid request"
        super().__init__(400, {"error": error, "fields": fields})
        self.fields = fields


class RateLimited(Exception):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds
