"""Extended JSON in, plain JSON out.

Change events arrive as relaxed or canonical MongoDB Extended JSON (or plain JSON from an
Atlas trigger without "Enable Extended JSON"); `bson.json_util` reads them. Partner payloads
are plain JSON: ObjectIds become hex strings and dates ISO 8601 UTC strings.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from typing import Any

import orjson
from bson import Binary, Decimal128, Int64, ObjectId, Timestamp, json_util
from bson.json_util import JSONOptions

from distiller.core.clock import iso_utc

#: Dates come back timezone-aware (UTC), so they compare and serialise without guesswork.
JSON_OPTIONS: JSONOptions = json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=dt.UTC)


#: The `$date` strings Mongo and pymongo write in relaxed Extended JSON: UTC, whole or millisecond seconds.
_RELAXED_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?Z")
#: The keys json_util decodes. If a pymongo release renames its table, the shortcut is off, not wrong.
WRAPPER_KEYS: frozenset[str] | None = frozenset(getattr(json_util, "_PARSERS_SET", ())) or None


def object_hook(document: dict[str, Any]) -> Any:
    """`json_util.object_hook`, with two shortcuts that give the very same values.

    Most objects in a change event are plain documents: one set operation tells, instead of a
    Python loop over their keys. A relaxed `$date` string is read with `datetime.fromisoformat`
    rather than `strptime`, which dominated parsing; `test_ejson.py` proves the results equal
    `json_util`'s for every millisecond value. Everything else is `json_util`'s own decoding.
    """
    if WRAPPER_KEYS is not None and WRAPPER_KEYS.isdisjoint(document):
        return document
    if len(document) == 1:
        # The wrappers a change event is made of, built as json_util's parsers build them (same
        # constructor, same arguments) without its dispatch; `test_ejson_fast_paths.py` pins it.
        if "$oid" in document:
            return _object_id(document["$oid"])
        value = document.get("$date")
        if type(value) is str and _RELAXED_DATE.fullmatch(value):
            try:
                return dt.datetime.fromisoformat(value)
            except ValueError:
                pass  # out-of-range fields: let json_util raise its own error
        elif type(value) is Int64 and _MIN_MS <= value <= _MAX_MS:  # canonical: {"$numberLong"} decoded first
            return _EPOCH + dt.timedelta(milliseconds=int(value))
        timestamp = document.get("$timestamp")
        if type(timestamp) is dict and len(timestamp) == 2 and "t" in timestamp and "i" in timestamp:
            return Timestamp(timestamp["t"], timestamp["i"])
    return json_util.object_hook(document, JSON_OPTIONS)


def _object_id(text: Any) -> ObjectId:
    """`ObjectId(text)`, given the 12 bytes when `text` is 24 hex digits (the constructor's quick
    branch: its own `fromhex` path validates again); anything else goes to it unchanged."""
    if type(text) is str and len(text) == 24:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) == 12:
            return ObjectId(raw)
    return ObjectId(text)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Milliseconds `datetime` holds in UTC (years 1-9999); json_util decides about any other value.
_MIN_MS = int((dt.datetime(1, 1, 1, tzinfo=dt.UTC) - _EPOCH).total_seconds()) * 1000
_MAX_MS = int((dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC) - _EPOCH).total_seconds() * 1000)


def loads(text: str | bytes) -> Any:
    """Parse one JSON text, decoding Extended JSON wrappers (`$oid`, `$date`, ...) as `json_util.loads` does.

    Text without a `"$` cannot hold an Extended JSON wrapper, so it skips the per-object hook.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    if "$" not in text or '"$' not in text:  # `$` first: one fast scan, not a stop at every quote
        return json.loads(text)
    return json.loads(text, object_hook=object_hook)


def decode(value: Any) -> Any:
    """Decode Extended JSON wrappers in an already-parsed structure (a Lambda event is parsed for us)."""
    if isinstance(value, dict):
        return json_util.object_hook({k: decode(v) for k, v in value.items()}, JSON_OPTIONS)
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def plain(value: Any) -> Any:
    """Convert BSON values to what a partner's JSON parser expects."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    # The exact types most fields hold, before the subclass checks below (same results).
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if kind is ObjectId:
        return str(value)
    if kind is dt.datetime:
        return iso_utc(value)
    if isinstance(value, str):  # bson.Code, Regex patterns...: str subclasses partners need as text
        return str(value)
    if isinstance(value, int):
        # BSON integers are at most 64-bit; a larger JSON number is not a value Mongo holds.
        return int(value) if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN or Infinity
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        if not number.is_finite():
            return None  # JSON has no NaN or Infinity
        if number == number.to_integral_value() and _INT64_MIN <= number <= _INT64_MAX:
            return int(number)
        approximate = float(number)
        return approximate if math.isfinite(approximate) else None
    if isinstance(value, Int64):
        return int(value)
    if isinstance(value, Timestamp):
        return iso_utc(value.as_datetime())
    if isinstance(value, (Binary, bytes)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def id_string(value: Any) -> str | None:
    """An entity id as partners see it: the hex string of an ObjectId, or the string itself."""
    if value is None:
        return None
    if isinstance(value, dict) and "$oid" in value:  # tolerate undecoded wrappers
        return str(value["$oid"])
    return str(value)


_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def _floats_agree(value: Any) -> bool:
    """Whether orjson writes every float in `value` as `json` does (`repr`): zero, and magnitudes in
    [1e-4, 1e16). Elsewhere orjson writes `0.00001` and `1e-8` where json writes `1e-05`, `1e-08`."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return value == 0.0 or 1e-4 <= abs(value) < 1e16  # NaN and infinities: False
    else:
        return True
    for item in items:  # leaves checked inline: a delivery is mostly strings, one call per container
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float:
            if not (item == 0.0 or 1e-4 <= abs(item) < 1e16):
                return False
        elif not _floats_agree(item):
            return False
    return True


def compact_json(document: Any) -> str:
    """`json.JSONEncoder(separators=(",", ":")).encode(document)`, byte for byte, at orjson's speed.

    orjson writes the same text for plain JSON values except for non-ASCII and DEL characters
    (json escapes them), floats outside [1e-4, 1e16), NaN and infinities, integers beyond 64 bits
    and non-string keys (orjson refuses those): such documents go through `json`.
    """
    if _floats_agree(document):
        try:
            text = orjson.dumps(document)
        except TypeError:  # orjson.JSONEncodeError: big integers, non-str keys, other types
            pass
        else:
            if text.isascii() and b"\x7f" not in text:
                return text.decode("ascii")
    return _COMPACT(document)
