"""`distiller partners` input validation: what an operator types, accepted or refused with a message
naming the option. Pure: the resolver is a table, nothing is resolved or contacted."""

from __future__ import annotations

import base64
import datetime as dt
import io

import pytest

from distiller.api.auth import decode_shared_secret
from distiller_tools.partners import records
from distiller_tools.partners.cli import table_rows
from distiller_tools.partners.ping import TEST_EVENT_ID_PREFIX, sample_message
from distiller_tools.partners.records import InputError
from distiller_tools.partners.stores import without_secrets

ADDRESSES = {
    "hooks.partner.example": ["93.184.216.34"],
    "inside.partner.example": ["10.1.2.3"],
    "rebind.partner.example": ["93.184.216.34", "127.0.0.1"],
    "metadata.partner.example": ["169.254.169.254"],
}


def resolver(host: str, port: int) -> list[str]:
    """The only resolver these tests use: a table, so no name is ever looked up."""
    if host not in ADDRESSES:
        raise OSError("Name or service not known")
    return ADDRESSES[host]


# -- events ---------------------------------------------------------------------------------------

EVENTS_ACCEPTED = [
    ("*", ["*"]),
    ("deal.*", ["deal.*"]),
    ("deal.created,offer.*", ["deal.created", "offer.*"]),
    (" deal.created , deal.created ", ["deal.created"]),
    ("document.completed,user.*", ["document.completed", "user.*"]),
]


@pytest.mark.parametrize(("text", "expected"), EVENTS_ACCEPTED)
def test_events_accepted(text, expected):
    assert records.parse_events(text) == expected


EVENTS_REFUSED = [
    ("dael.*", "'dael.*' matches no catalog event (did you mean deal.*?)"),
    ("deal.craeted", "'deal.craeted' is not a catalog event (did you mean deal.created"),
    ("payment.*", "'payment.*' matches no catalog event"),
    ("deal*", "'deal*' matches no catalog event"),
    ("de*.created", "matches no catalog event"),
    ("", "expected event names or wildcards"),
    ("deal.created,,offer.created", "expected event names or wildcards"),
    ("zzz", "'zzz' is not a catalog event (wildcards: *, deal.*"),
]


@pytest.mark.parametrize(("text", "message"), EVENTS_REFUSED)
def test_events_refused_naming_the_item(text, message):
    with pytest.raises(InputError, match="--events") as refused:
        records.parse_events(text)
    assert message in str(refused.value)


def test_catalog_events_are_unique_names_from_the_reducer_tables():
    events = records.catalog_events()
    assert len(events) == len(set(events))
    assert {"deal.created", "offer.created", "listing.created", "document.completed"} <= set(events)


# -- URL ------------------------------------------------------------------------------------------

URLS_REFUSED = [
    ("http://hooks.partner.example/x", {}, "scheme 'http' refused"),
    ("ftp://hooks.partner.example/x", {}, "scheme 'ftp' refused"),
    ("https://inside.partner.example/x", {}, "resolves to a private address"),
    ("https://rebind.partner.example/x", {}, "resolves to a loopback address"),
    ("https://127.0.0.1/x", {}, "address 127.0.0.1 is loopback"),
    ("https://nowhere.partner.example/x", {}, "does not resolve"),
    ("https://user:pw@hooks.partner.example/x", {}, "credentials in the URL"),
    ("https://metadata.partner.example/", {"allow_private": True}, "cloud metadata"),
    ("hooks.partner.example/x", {}, "scheme '(none)' refused"),
]


@pytest.mark.parametrize(("url", "options", "message"), URLS_REFUSED)
def test_url_refused_naming_the_option_and_reason(url, options, message):
    with pytest.raises(InputError) as refused:
        records.check_url(url, resolver=resolver, **options)
    assert str(refused.value).startswith(f"--url {url!r}: ")
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("url", "allow_private"),
    [
        ("https://hooks.partner.example/privateauto", False),
        ("http://127.0.0.1:8080/hook", True),
        ("https://inside.partner.example/x", True),
    ],
)
def test_url_accepted(url, allow_private):
    assert records.check_url(url, allow_private=allow_private, resolver=resolver) == url


# -- ids, scopes, platforms, lists, rate limits ----------------------------------------------------


@pytest.mark.parametrize("partner_id", ["acme-motors", "a", "p.1@x+y=z_", "x" * 256])
def test_partner_id_accepted(partner_id):
    assert records.check_partner_id(partner_id) == partner_id


@pytest.mark.parametrize("partner_id", ["", "acme/motors", "acme motors", "acme\nmotors", "café", "x" * 257])
def test_partner_id_refused(partner_id):
    with pytest.raises(InputError, match="partner id"):
        records.check_partner_id(partner_id)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (records.parse_scope, "org", "--scope 'org': expected one of appSource, organization, both"),
        (records.parse_link_platform, "web", "--link-platform 'web': expected one of dealnow, pa-app"),
    ],
)
def test_choices_refused(parse, text, message):
    with pytest.raises(InputError) as refused:
        parse(text)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a,b", ["a", "b"]), ("a, a", ["a"]), ("", []), (" ", [])],
)
def test_id_lists(text, expected):
    assert records.parse_id_list(text, "--lead-organization-ids") == expected


def test_id_list_with_an_empty_item_refused():
    with pytest.raises(InputError, match="--lead-organization-ids 'a,,b'"):
        records.parse_id_list("a,,b", "--lead-organization-ids")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30/60", {"requests": 30, "perSeconds": 60}),
        ("1/0.5", {"requests": 1, "perSeconds": 0.5}),
        ("none", None),
    ],
)
def test_rate_limit_accepted(text, expected):
    assert records.parse_rate_limit(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30", "expected N/SECONDS"),
        ("x/60", "expected N/SECONDS"),
        ("0/60", "requests: expected an integer >= 1"),
        ("5/0", "perSeconds: expected a number of seconds"),
        ("5/9999999", "perSeconds: expected a number of seconds"),
    ],
)
def test_rate_limit_refused(text, message):
    with pytest.raises(InputError, match="--leads-rate-limit") as refused:
        records.parse_rate_limit(text)
    assert message in str(refused.value)


# -- whole records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"partnerId": "p", "colour": "red"}, "partner 'p': unknown key(s) colour"),
        ({"partnerId": "p", "webhook": {"url": "https://x", "retries": 3}}, "unknown key(s) webhook.retries"),
        ({"partnerId": "p", "webhookScope": "all"}, "webhookScope: 'all' is not one of"),
        ({"partnerId": "p", "active": "yes"}, "active: expected true or false"),
    ],
)
def test_record_refused(record, message):
    with pytest.raises(InputError) as refused:
        records.check_record(record, "partner 'p'")
    assert message in str(refused.value)


def test_apply_changes_sets_only_the_given_fields_and_removes_with_none():
    record = {"partnerId": "p", "webhook": {"url": "https://a", "events": ["*"]}, "leadsRateLimit": {"requests": 1}}
    changed = records.apply_changes(record, {"webhook.events": ["deal.*"], "leadsRateLimit": None})
    assert changed == {"partnerId": "p", "webhook": {"url": "https://a", "events": ["deal.*"]}}
    assert record["webhook"]["events"] == ["*"]  # the original is untouched


def test_without_secrets_drops_both_secrets_and_the_mongo_id():
    record = {"_id": 1, "partnerId": "p", "sharedSecret": "s", "webhook": {"url": "u", "secret": "w"}}
    assert without_secrets(record) == {"partnerId": "p", "webhook": {"url": "u"}}


# -- secrets ---------------------------------------------------------------------------------------


def test_generated_secrets_are_strong_distinct_and_usable_by_the_api():
    webhook = {records.new_webhook_secret() for _ in range(50)}
    shared = [records.new_shared_secret() for _ in range(50)]
    assert len(webhook) == 50 and all(len(s) >= 43 for s in webhook)  # 32 random bytes, URL-safe
    assert len(set(shared)) == 50
    for value in shared:
        decoded = decode_shared_secret(value)  # the API's own reading of a shared secret
        assert len(decoded) >= 43 and base64.b64encode(decoded.encode()).decode() == value


# -- list table, test message ----------------------------------------------------------------------


def test_table_rows_show_id_active_state_scope_host_event_count_and_the_pause():
    paused_at = dt.datetime(2026, 4, 21, 9, 30, tzinfo=dt.UTC)
    rows = table_rows(
        [
            {"partnerId": "a", "webhook": {"url": "https://h.example/x", "events": ["deal.*", "offer.*"]}},
            {"partnerId": "b", "active": False, "webhookScope": "appSource", "webhook": {}},
            {"partnerId": "c", "state": "paused", "health": {"pausedAt": paused_at, "lastProbeAt": None}},
        ],
        {"c": 7},
    )
    assert rows == [
        ("PARTNER", "ACTIVE", "STATE", "SCOPE", "URL HOST", "EVENTS", "PAUSED SINCE", "LAST PROBE", "HELD"),
        ("a", "yes", "active", "both", "h.example", "2", "-", "-", "0"),
        ("b", "no", "active", "appSource", "-", "*", "-", "-", "0"),
        ("c", "yes", "paused", "both", "-", "*", "2026-04-21T09:30:00.000Z", "-", "7"),
    ]
    assert table_rows([{"partnerId": "a"}])[1][-1] == "-"  # no held store (the partners file)


def test_sample_message_is_a_fresh_test_delivery_of_the_event_shape():
    first, second = sample_message("acme", "offer.created"), sample_message("acme", "offer.created")
    assert first.event_id.startswith(TEST_EVENT_ID_PREFIX) and first.event_id != second.event_id
    assert first.payload["test"] is True
    assert first.payload["eventId"] == first.event_id and first.payload["entityType"] == "offers"
    assert first.event_key.split(":")[1:] == ["acme", "offer.created", "0"]


def test_unknown_event_refused_by_test_before_any_store_is_opened():
    from distiller_tools.partners.cli import main

    err = io.StringIO()
    code = main(["test", "acme", "--event", "deal.*", "--partners-file", "/nonexistent/p.json"], io.StringIO(), err)
    assert code == 2
    assert "--event: 'deal.*': a test sends one event: name it exactly" in err.getvalue()
    err = io.StringIO()
    argv = ["test", "acme", "--event", "dael.created", "--partners-file", "/nonexistent/p.json"]
    code = main(argv, io.StringIO(), err)
    assert code == 2 and "--event: 'dael.created'" in err.getvalue()


# -- endpoint health: a paused record ----------------------------------------------------------------

PAUSED_AT = dt.datetime(2026, 4, 21, 9, 30, tzinfo=dt.UTC)
PAUSED = {
    "partnerId": "p",
    "active": True,
    "webhook": {"url": "https://h.example/x"},
    "state": "paused",
    "health": {"pausedAt": PAUSED_AT, "reason": "5 consecutive deliveries dead-lettered", "lastProbeAt": None},
}


def test_a_paused_record_is_a_valid_record_and_its_state_and_health_are_checked():
    assert records.check_record(dict(PAUSED), "partner 'p'") == PAUSED  # state and health are known keys
    with pytest.raises(InputError, match=r"partner 'p'\.state: 'stopped' is not one of active, paused"):
        records.check_record({**PAUSED, "state": "stopped"}, "partner 'p'")
    with pytest.raises(InputError, match=r"partner 'p'\.health: expected an object"):
        records.check_record({**PAUSED, "health": "down"}, "partner 'p'")


def test_enable_changes_resume_a_paused_partner_and_nothing_else():
    from distiller_tools.partners.cli import enable_changes

    at = PAUSED_AT + dt.timedelta(hours=1)
    changes = enable_changes({**PAUSED, "active": False}, at)
    assert changes == {
        "active": True,
        "state": None,
        "health": {**PAUSED["health"], "resumedAt": at, "resumedBy": "partners enable"},
    }
    resumed = records.apply_changes({**PAUSED, "active": False}, changes)
    assert "state" not in resumed and records.check_record(resumed, "partner 'p'")
    assert enable_changes({"partnerId": "p", "active": True}, at) == {}  # already running: a no-op
    assert enable_changes({"partnerId": "p"}, at) == {}  # `active` absent is active
    assert enable_changes({"partnerId": "p", "active": False}, at) == {"active": True}


def test_set_has_no_option_that_writes_the_pause_state(capsys):
    from distiller_tools.partners.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["set", "p", "--state", "active", "--partners-file", "/nonexistent/p.json"], io.StringIO(), io.StringIO())
    assert refused.value.code == 2
    assert "unrecognized arguments: --state" in capsys.readouterr().err


def test_show_lines_say_since_when_why_the_last_probe_and_what_is_held():
    from distiller_tools.partners.health import status_lines

    state, held = status_lines(PAUSED, 3)
    assert state == (
        "state: paused since 2026-04-21T09:30:00.000Z: 5 consecutive deliveries dead-lettered; not probed yet; "
        "deliveries are held, not sent"
    )
    assert held.startswith("held: 3 deliveries held (`distiller partners enable p` resumes at once")
    probed = {
        **PAUSED,
        "health": {**PAUSED["health"], "lastProbeAt": "2026-04-21T09:35:00.000Z", "probeError": "HTTP\n 503"},
    }
    assert "; last probe 2026-04-21T09:35:00.000Z (HTTP 503);" in status_lines(probed, 0)[0]

    resumed = {"partnerId": "p", "health": {"resumedAt": PAUSED_AT, "resumedBy": "partners enable"}}
    assert status_lines(resumed, 1) == [
        "state: active (resumed 2026-04-21T09:30:00.000Z by partners enable)",
        "held: 1 delivery held (the health sweep (HealthFunction, every minute) drains them within a minute, "
        "oldest first)",
    ]
    assert status_lines({"partnerId": "p", "active": False}, 2)[1] == (
        "held: 2 deliveries held (kept until `distiller partners enable p`)"
    )
    assert status_lines(PAUSED, None)[1] == (
        "held: the partners file keeps no held deliveries (only the deployed stack holds them)"
    )


def test_drain_lines_name_the_event_ids_and_count_beyond_twenty():
    from distiller_tools.partners.health import Drained, drain_lines

    ids = [f"e{n}" for n in range(25)]
    [line] = drain_lines("p", Drained(event_ids=ids), 0)
    assert line.endswith(": " + ", ".join(ids[:20]) + " and 5 more")
    lines = drain_lines("p", Drained(event_ids=[], already_delivered=1), 4)
    assert lines[0].startswith("partners: drained 0 held deliveries of 'p'") and not lines[0].endswith(":")
    assert lines[1:] == [
        "partners: 1 already delivered (by a probe or replay): removed unsent",
        "partners: 4 still held for 'p': the health sweep (HealthFunction, every minute) drains them within a "
        "minute, oldest first",
    ]
