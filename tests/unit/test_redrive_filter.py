"""The operator's filter for `dlq redrive` and `replay`: partner, event pattern (as subscriptions match), time."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from distiller_tools.ops.dlq_filter import DeliveryFilter, delivery_filter, sqs_sent_at, summary_lines
from distiller_tools.partners.records import InputError

T0 = dt.datetime(2026, 4, 21, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("partners", "events", "partner", "event", "matches"),
    [
        ([], [], "acme", "deal.created", True),
        (["acme"], [], "acme", "deal.created", True),
        (["acme"], [], "carmart", "deal.created", False),
        (["acme,carmart"], [], "carmart", "deal.created", True),
        (["acme", "carmart"], [], "other", "deal.created", False),
        ([], ["deal.*"], "acme", "deal.completed", True),
        ([], ["deal.*"], "acme", "offer.created", False),
        ([], ["*"], "acme", "offer.created", True),
        ([], ["deal.created"], "acme", "deal.created", True),
        ([], ["deal.created"], "acme", "deal.completed", False),
        ([], ["deal.created,offer.*"], "acme", "offer.created", True),
        (["acme"], ["deal.*"], "acme", "offer.created", False),
        (["acme"], ["deal.*"], "carmart", "deal.created", False),
        (["acme"], ["deal.*"], "acme", "deal.created", True),
    ],
)
def test_partner_and_event_patterns_match_as_subscriptions_do(partners, events, partner, event, matches):
    only = delivery_filter(partners, events)

    assert only.matches_delivery(partner, event) is matches


@pytest.mark.parametrize(
    ("since", "until", "when", "matches"),
    [
        (None, None, None, True),
        (None, None, T0, True),
        (T0, None, T0, True),  # inclusive
        (T0, None, T0 - dt.timedelta(seconds=1), False),
        (None, T0, T0, True),  # inclusive
        (None, T0, T0 + dt.timedelta(seconds=1), False),
        (T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(minutes=30), True),
        (T0, None, None, False),  # a message of unknown time never matches a bounded range
    ],
)
def test_time_range_is_closed_and_an_unknown_time_matches_only_an_open_range(since, until, when, matches):
    assert delivery_filter(since=since, until=until).matches_time(when) is matches


def test_a_time_without_a_zone_is_utc():
    only = delivery_filter(since=dt.datetime(2026, 4, 21, 12, 0))

    assert only.since == T0


@pytest.mark.parametrize(
    ("partners", "events", "since", "until", "complaint"),
    [
        ([], ["deal.nope"], None, None, "--event: 'deal.nope' is not a catalog event"),
        ([], ["nope.*"], None, None, "--event: 'nope.*' matches no catalog event"),
        ([], ["deal.created,"], None, None, "--event 'deal.created,'"),
        (["bad id!"], [], None, None, "partner id 'bad id!'"),
        ([""], [], None, None, "--partner ''"),
        ([], [], T0, T0 - dt.timedelta(seconds=1), "--until 2026-04-21T11:59:59Z is before --since"),
    ],
)
def test_bad_filters_are_refused_naming_the_option(partners, events, since, until, complaint):
    with pytest.raises(InputError) as error:
        delivery_filter(partners, events, since, until)

    assert complaint in str(error.value)


@pytest.mark.parametrize(
    ("only", "by_delivery", "active"),
    [
        (DeliveryFilter(), False, False),
        (DeliveryFilter(since=T0), False, True),
        (DeliveryFilter(until=T0), False, True),
        (DeliveryFilter(partners=("acme",)), True, True),
        (DeliveryFilter(events=("deal.*",)), True, True),
    ],
)
def test_what_a_filter_asks_about(only, by_delivery, active):
    assert (only.by_delivery, only.active) == (by_delivery, active)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"SentTimestamp": "1776772800000"}, T0),
        ({"SentTimestamp": "not a number"}, None),
        ({}, None),
    ],
)
def test_the_sqs_sent_timestamp_is_read_as_utc_milliseconds(attributes, expected):
    assert sqs_sent_at({"Attributes": attributes}) == expected


def test_the_summary_has_one_sorted_line_per_partner_and_event():
    counts = Counter({("carmart", "deal.created"): 2, ("acme", "offer.created"): 1, ("acme", "deal.created"): 3})

    assert summary_lines(counts, "would move") == [
        "acme deal.created: 3 would move",
        "acme offer.created: 1 would move",
        "carmart deal.created: 2 would move",
    ]


def test_describe_names_every_part():
    only = delivery_filter(["acme"], ["deal.*"], T0, T0 + dt.timedelta(hours=1))

    assert only.describe() == "partner acme, event deal.*, since 2026-04-21T12:00:00Z, until 2026-04-21T13:00:00Z"
    assert DeliveryFilter().describe() == "everything"
