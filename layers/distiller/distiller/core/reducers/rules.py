"""The vocabulary of the spec's "Mongo trigger" column, one small class per kind of trigger.

A reducer is a table of `Row(event, trigger, ...)`; each trigger reads a `Transitions`. On an
insert only triggers marked `on_insert` fire (the spec names `deals insert`, `offers insert`,
... and `ownershipInfo.ownershipType` "also on insert"); every other trigger is a transition
of an existing document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from distiller.core.reducers.plan import RowPlan
from distiller.core.transitions import MISSING, Transitions, top_field


class Trigger(Protocol):
    on_insert: bool

    @property
    def watches(self) -> str | None:
        """The top-level field this trigger reads, or None when any write may fire it."""
        ...

    def fires(self, t: Transitions) -> bool: ...

    def describe(self) -> str: ...


class _OnPath:
    """A trigger about one field: it can only fire when the change wrote that field's top level."""

    __slots__ = ()
    path: str

    @property
    def watches(self) -> str:
        return top_field(self.path)


@dataclass(frozen=True, slots=True)
class Inserted:
    """`<collection> insert`."""

    on_insert: bool = True
    watches: None = None

    def fires(self, t: Transitions) -> bool:
        return t.is_insert

    def describe(self) -> str:
        return "insert"


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same kind: `1`, `1.0` and `"true"` are not the boolean `true` (Python's `1 == True`)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _folded(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Becomes(_OnPath):
    """`path → value`: written with `value`, and (given a pre-image) not already `value`.

    `any_case`: a text value matches in any letter case (`CONFIRMED`, `Confirmed`), and a change
    of case alone is not a transition.
    """

    path: str
    value: Any
    on_insert: bool = False
    any_case: bool = False

    def fires(self, t: Transitions) -> bool:
        return t.touched(self.path) and self._is(t.after(self.path)) and not self._is(t.before(self.path))

    def _is(self, value: Any) -> bool:
        if self.any_case:
            return same_value(_folded(value), _folded(self.value))
        return same_value(value, self.value)

    def describe(self) -> str:
        return f"{self.path} → {self.value}" + (" (any letter case)" if self.any_case else "")


@dataclass(frozen=True, slots=True)
class SetTrue(_OnPath):
    """`path set true`: written with the boolean `true`, and (given a pre-image) not `true` before.

    Only the boolean counts: `1`, `1.0`, `"true"` are other values (an ordinary field write).
    """

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        return t.touched(self.path) and t.after(self.path) is True and t.before(self.path) is not True

    def describe(self) -> str:
        return f"{self.path} set true (the boolean)"


@dataclass(frozen=True, slots=True)
class BecomesTruthy(_OnPath):
    """`path set truthy`: written truthy, and (given a pre-image) not truthy before."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        return t.touched(self.path) and bool(t.after(self.path)) and not t.before(self.path)

    def describe(self) -> str:
        return f"{self.path} set truthy"


@dataclass(frozen=True, slots=True)
class IsSet(_OnPath):
    """`path set`: written with a non-null value that (given a pre-image) differs from the old one."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        value = t.after(self.path)
        return value is not MISSING and value is not None and t.changed(self.path)

    def describe(self) -> str:
        return f"{self.path} set" + (" (also on insert)" if self.on_insert else "")


@dataclass(frozen=True, slots=True)
class Updated(_OnPath):
    """`path updated on existing document`: a non-null value written by an update, never on insert."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        value = t.after(self.path)
        return not t.is_insert and value is not MISSING and value is not None and t.changed(self.path)

    def describe(self) -> str:
        return f"{self.path} updated on existing document (not on insert)"


@dataclass(frozen=True, slots=True)
class AnyOtherChange:
    """The catch-all: the update wrote some field other than pure bookkeeping ones."""

    ignored: frozenset[str] = frozenset()
    on_insert: bool = False
    watches: None = None

    def fires(self, t: Transitions) -> bool:
        if t.is_insert:
            return False
        return any(p.split(".", 1)[0] not in self.ignored and t.changed(p) for p in t.written_paths())

    def describe(self) -> str:
        ignored = ", ".join(sorted(self.ignored))
        return "update where no more specific row matches" + (f" (ignoring {ignored})" if ignored else "")


@dataclass(frozen=True, slots=True)
class Touched(_OnPath):
    """The change wrote `path` (any value). Used to tell apart two writers of the same flag."""

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        return t.touched(self.path)

    def describe(self) -> str:
        return f"{self.path} written in the same update"


@dataclass(frozen=True, slots=True)
class NotTouched:
    """The change did not write `path`."""

    path: str
    on_insert: bool = False
    watches: None = None

    def fires(self, t: Transitions) -> bool:
        return not t.touched(self.path)

    def describe(self) -> str:
        return f"{self.path} not written"


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every part fires. Watches what its first part watches (the primary condition)."""

    parts: tuple[Trigger, ...]
    on_insert: bool = False

    @property
    def watches(self) -> str | None:
        return self.parts[0].watches

    def fires(self, t: Transitions) -> bool:
        return all(part.fires(t) for part in self.parts)

    def describe(self) -> str:
        return " AND ".join(part.describe() for part in self.parts)


def _signed_slots(values: Any, field: str) -> list[bool]:
    if not isinstance(values, list):
        return []
    return [isinstance(v, dict) and v.get(field) not in (None, MISSING) for v in values]


@dataclass(frozen=True, slots=True)
class EachNewlySet:
    """`array[i].field set`, once per slot i newly set (three signatures in one update: three events).

    A slot counts when the change wrote it (`array.i.field`, `array.i`, or the array whole) with
    a non-null value that, given a pre-image, was null before.
    """

    array: str
    field: str
    on_insert: bool = False

    @property
    def watches(self) -> str:
        return top_field(self.array)

    def slots(self, t: Transitions) -> list[int]:
        if not t.touched(self.array):
            return []
        after = _signed_slots(t.after(self.array), self.field)
        before_values = t.before(self.array)
        before = _signed_slots(before_values, self.field) if t.has_pre_image else None
        newly = []
        for index, signed in enumerate(after):
            if not signed or not t.touched(f"{self.array}.{index}.{self.field}"):
                continue
            if before is not None and index < len(before) and before[index]:
                continue
            newly.append(index)
        return newly

    def fires(self, t: Transitions) -> bool:
        return bool(self.slots(t))

    def describe(self) -> str:
        return f"{self.array}[i].{self.field} set (one event per slot)"


@dataclass(frozen=True, slots=True)
class AllNewlySet:
    """Every slot of `array` has `field` set, and this change set the last of them."""

    array: str
    field: str
    on_insert: bool = False

    @property
    def watches(self) -> str:
        return top_field(self.array)

    def fires(self, t: Transitions) -> bool:
        after = _signed_slots(t.after(self.array), self.field)
        if not after or not all(after):
            return False
        if t.has_pre_image:
            before = _signed_slots(t.before(self.array), self.field)
            return not (before and all(before))
        return EachNewlySet(self.array, self.field).fires(t)

    def describe(self) -> str:
        return f"every {self.array}[i].{self.field} set (the last one by this update)"


@dataclass(frozen=True, slots=True)
class FirstAdded(_OnPath):
    """`path` (an array) goes from empty to populated: the first upload only.

    With a pre-image: empty or missing before, non-empty after. Without one: the update wrote
    element 0 (`path.0...`), or wrote the array (or a parent) whole holding exactly one element.
    """

    path: str
    on_insert: bool = False

    def fires(self, t: Transitions) -> bool:
        if not t.touched(self.path):
            return False
        after = t.after(self.path)
        if not isinstance(after, list) or not after:
            return False
        if t.has_pre_image:
            before = t.before(self.path)
            return not (isinstance(before, list) and before)
        if t.touched(f"{self.path}.0"):
            written_whole = any(key == self.path or self.path.startswith(key + ".") for key in t.written_keys())
            return len(after) == 1 if written_whole else True
        return False

    def describe(self) -> str:
        return f"{self.path} populated (first upload only)"


PayloadBuilder = Callable[..., dict[str, Any]]
"""`(document, detail=None, linked_deal=None) -> payload fields`. `detail` carries per-emission data
(a slot); `linked_deal` is the deal through which the receiving partner reaches an entity that
routes through deals (documents, credit reports), or None."""

FileRef = tuple[str, str]
"""(storage key, filename) of a file an event carries as a signed link."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a spec trigger table: the event fires when any of its triggers does."""

    event: str
    triggers: tuple[Trigger, ...]
    payload: PayloadBuilder | None = None
    """Overrides the collection's payload for this event (e.g. negative-equity flags)."""
    watches: frozenset[str] | None = None
    """Top-level fields the triggers read; None when any write may fire the row. Lets a reducer
    skip rows whose fields the change never wrote."""
    trigger_text: str = ""
    where: tuple[tuple[str, Any], ...] = ()
    """Conditions on the document itself (e.g. `docClassification == poa`)."""
    files: Callable[[dict[str, Any]], list[FileRef]] | None = None
    """Files the event carries as `documents[]` signed links."""
    entity_type: str | None = None
    """Overrides the collection's `entityType` when the payload's `id` is another entity's (a deal's)."""

    def fires(self, t: Transitions) -> bool:
        return any((trigger.on_insert or not t.is_insert) and trigger.fires(t) for trigger in self.triggers)

    def emissions(self, t: Transitions) -> list[dict[str, Any]]:
        """One detail dict per event this row emits for the change: `[]`, `[{}]`, or one per slot."""
        if self.where and any(t.document_value(path) != value for path, value in self.where):
            return []
        for trigger in self.triggers:
            if not (trigger.on_insert or not t.is_insert):
                continue
            if isinstance(trigger, EachNewlySet):
                slots = trigger.slots(t)
                if slots:
                    return [{"slot": slot} for slot in slots]
            elif trigger.fires(t):
                return [{}]
        return []

    def describe(self) -> str:
        return self.trigger_text


def row(
    event: str,
    *triggers: Trigger,
    payload: PayloadBuilder | None = None,
    where: dict[str, Any] | None = None,
    files: Callable[[dict[str, Any]], list[FileRef]] | None = None,
    entity_type: str | None = None,
) -> Row:
    fields = [trigger.watches for trigger in triggers]
    watches = None if None in fields else frozenset(f for f in fields if f is not None)
    text = " OR ".join(trigger.describe() for trigger in triggers)
    conditions = tuple((where or {}).items())
    if conditions:
        text += " (where " + ", ".join(f"{k} = {v}" for k, v in conditions) + ")"
    return Row(event, tuple(triggers), payload, watches, text, conditions, files, entity_type)


def needed_paths(r: Row) -> tuple[str, ...] | None:
    """The paths one of which an update must write or remove for `r` to fire (every trigger on a
    path reads it through `Transitions.touched` or `after`), or None when any write may."""
    paths = []
    for trigger in r.triggers:
        while isinstance(trigger, AllOf):  # fires only when its first part does
            trigger = trigger.parts[0]
        if isinstance(trigger, _OnPath):
            paths.append(trigger.path)
        elif isinstance(trigger, (EachNewlySet, AllNewlySet)):
            paths.append(trigger.array)
        else:
            return None
    return tuple(paths)


@dataclass(frozen=True, slots=True)
class Reducer:
    """A collection's trigger table. Row order is the emission order (and so part of each eventKey).

    `one_event_per_update`: on an update the first matching row wins (the listings rule:
    "one Mongo update produces at most one listing event").
    """

    collection: str
    entity_type: str
    rows: tuple[Row, ...]
    payload: PayloadBuilder
    one_event_per_update: bool = False

    aliases: tuple[str, ...] = ()
    """Other collection names the same table serves (the spec spells some two ways)."""
    linked_deals: tuple[str, ...] = ()
    """Fields holding the deal(s) the entity belongs to; routing and `dealId` go through them."""
    plan: RowPlan = field(init=False, repr=False, compare=False)
    """`rows` compiled by watched field, built with the table (at import)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", RowPlan.of(self.rows, map(needed_paths, self.rows)))

    def reduce(self, t: Transitions) -> list[Row]:
        """The rows this change fires, in table order."""
        return [r for r, _ in self.emissions(t)]

    def emissions(self, t: Transitions) -> list[tuple[Row, dict[str, Any]]]:
        """(row, detail) for every event the change produces, in emission order."""
        first_only = self.one_event_per_update and not t.is_insert
        fired: list[tuple[Row, dict[str, Any]]] = []
        if t.change.operation_type == "update":  # rows on a written path (`RowPlan.rows_for_paths`)
            written = (*t.change.updated_fields, *t.change.removed_fields)
            rows = [self.rows[index] for index in self.plan.rows_for_paths(written)]
        else:  # an insert or replace writes every field: the whole table, minus rows on absent fields
            rows = [self.rows[index] for index in self.plan.rows_for(t.written_tops())]  # remembered per shape
        for r in rows:
            details = r.emissions(t)
            if details:
                fired += [(r, detail) for detail in details]
                if first_only:
                    break
        return fired
