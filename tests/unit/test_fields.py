"""The field rules /sell and /leads share (`distiller.api.fields`)."""

import re

import pytest

from distiller.api import fields


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1HGBH41JXMN109186", "1HGBH41JXMN109186"), ("1hgbh41jxmn109186", "1HGBH41JXMN109186")],
)
def test_a_vin_is_answered_in_upper_case(value, expected):
    assert fields.vin(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1HGBH41JXMN10918", "must be 17 characters (got 16)"),
        ("1HGBH41JXMN1091866", "must be 17 characters (got 18)"),
        ("1HGBH41JXMN10918I", "without I, O or Q"),
        ("1HGBH41JXMN10918o", "without I, O or Q"),
        ("1HGBH41JXMN10918-", "only A-Z and 0-9"),
    ],
)
def test_a_malformed_vin_is_refused_saying_why(value, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        fields.vin(value)


@pytest.mark.parametrize("value", ["jane@example.com", "j.s+tag@mail.example.co.uk"])
def test_email_shapes_accepted(value):
    assert fields.email(value) == value


@pytest.mark.parametrize(
    "value", ["jane.example.com", "jane doe@example.com", "a@.example.com", "a@example..com", "a@b"]
)
def test_email_shapes_refused(value):
    with pytest.raises(ValueError, match="email address"):
        fields.email(value)
