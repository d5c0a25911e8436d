"""Field rules the write routes share: a VIN and an email address are checked the same everywhere."""

from __future__ import annotations

import re

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
