"""Claim check for large webhook payloads: the payload in S3, a pointer on the queue.

SQS carries at most 256 KiB per message on a queue at its historical default (and moto), 1 MiB
at most anywhere. A document event with many signed links can outgrow that. A delivery whose
payload is over `INLINE_LIMIT_BYTES` travels with `payloadRef` instead of `payload`; the
dispatcher loads it just before the POST. The reference stays on the message through retries,
deferrals, dead letters and redrives, so every later body is small too.

Objects are content-addressed (`{prefix}{sha256}.json`): storing the same payload again (a
retried Distiller batch) writes the same key, and a loaded payload is checked against its hash.
The bucket's lifecycle rule expires them after the dead-letter retention has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

INLINE_LIMIT_BYTES = 192 * 1024
"""Payloads larger than this (compact JSON) are claim-checked; the envelope stays far below 256 KiB."""


class PayloadTooLarge(ValueError):
    """A payload over the inline limit and no claim-check store configured: it can never be queued."""


class PayloadUnavailable(RuntimeError):
    """The store could not be reached (retry) or no longer holds the payload (`missing`: final)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class PayloadRef:
    bucket: str
    key: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any) -> PayloadRef:
        """Raise ValueError naming the field when `data` is not a payload reference."""
        if not isinstance(data, dict):
            raise ValueError("payloadRef: expected an object")
        for name in ("bucket", "key", "sha256"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"payloadRef.{name}: required string")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("payloadRef.size: expected a non-negative integer")
        return cls(data["bucket"], data["key"], size, data["sha256"])


class PayloadStore(Protocol):
    def put(self, raw: bytes) -> PayloadRef: ...

    def get(self, ref: PayloadRef) -> bytes: ...
