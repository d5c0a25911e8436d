"""Field rules the write routes share: a VIN and an email address are checked the same everywhere, and a
refused request model names its fields the same way."""

from __future__ import annotations

import re

from pydantic import ValidationError

VIN_LENGTH = 17
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")
"""The VIN alphabet: A–Z and 0–9 without I, O and Q (ISO 3779), never used so as not to be read as 1 and 0."""
MAX_EMAIL = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
"""A rough address shape: one @, no spaces, a domain of dot-separated non-empty labels."""


def vin(value: str) -> str:
    """The VIN in upper case (lower case is accepted); `ValueError` saying what is wrong otherwise."""
    upper = value.upper()
    if len(upper) != VIN_LENGTH:
        raise ValueError(f"must be {VIN_LENGTH} characters (got {len(upper)})")
    if not _VIN.fullmatch(upper):
        raise ValueError("must use only A-Z and 0-9, without I, O or Q")
    return upper


def email(value: str) -> str:
    """The address as given; `ValueError` when it has not the shape of one."""
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address such as jane@example.com")
    return value


def field_errors(error: ValidationError) -> dict[str, str]:
    """Each offending field of a request model (dotted path, `body` for the whole) and its reason, never
    the value sent: the `fields` of a 400."""
    found: dict[str, str] = {}
    for problem in error.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in problem["loc"]) or "body"
        kind = problem["type"]
        if kind == "extra_forbidden":
            reason = "unknown field"
        elif kind == "missing":
            reason = "required"
        elif kind == "json_invalid":
            reason = "not valid JSON"
        elif kind in ("model_type", "model_attributes_type"):
            reason = "must be a JSON object"
        else:
            reason = problem["msg"].removeprefix("Value error, ")
        found.setdefault(name, reason)
    return found
