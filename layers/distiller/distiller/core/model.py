"""The one shape every ingest path is normalised into, and the shapes the distiller emits.

`ChangeEvent`, `EmittedEvent` and `Delivery` are built once or more per change event: they are
plain slotted dataclasses, because a frozen one's `__init__` (one `object.__setattr__` per
field) cost ~2.5 µs per event in `make bench`. Nothing assigns to them after construction, and
their dict fields made them unhashable either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Operations that carry a document the reducers can read. Everything else
#: (delete, drop, rename, invalidate, ...) produces no partner event.
DOCUMENT_OPERATIONS = frozenset({"insert", "update", "replace"})


@dataclass(slots=True)  # not frozen: see the module docstring
class ChangeEvent:
    """One Mongo change, whichever way it arrived (change stream, Atlas/EventBridge, DocumentDB, SQS)."""

    resume_token: str
    operation_type: str
    collection: str
    document_id: Any
    full_document: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    updated_fields: dict[str, Any] = field(default_factory=dict)
    removed_fields: tuple[str, ...] = ()
    source: str = "change-stream"
    origin: str = ""
    """Where the event came from (`line 3`, `line 3 Records[1]`), for errors and --explain."""

    @property
    def has_pre_image(self) -> bool:
        return self.before is not None


@dataclass(frozen=True, slots=True)
class RecordError:
    """A record that could not be distilled, with where it was and why. Never dropped silently."""

    origin: str
    reason: str
    retryable: bool = False

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}" if self.origin else self.reason


@dataclass(slots=True)  # not frozen: see the module docstring
class EmittedEvent:
    """A partner event a reducer produced for one change, before routing."""

    event: str
    emission_index: int
    trigger: str
    detail: dict[str, Any] = field(default_factory=dict)
    """Per-emission data, e.g. the signature `slot` of a `document.signature_added`."""


@dataclass(slots=True)  # not frozen: see the module docstring
class Delivery:
    """One partner event for one partner: what goes on the delivery queue."""

    partner_id: str
    event: str
    event_id: str
    event_key: str
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The `distiller distill` output line (the CLI contract)."""
        return {
            "partnerId": self.partner_id,
            "event": self.event,
            "eventId": self.event_id,
            "eventKey": self.event_key,
            "payload": self.payload,
        }
