"""`distiller partners` end to end: the local partners file (tmp), Mongo (mongomock) + Secrets Manager
(moto), and `test` pings to a loopback `distiller receiver` that verifies the signature.

Names resolve through a table (`resolver`), never the network; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import mongomock
import pytest
from moto import mock_aws

from distiller.adapters.endpoint_health import MongoPartnerHealth
from distiller.adapters.secrets import PartnerSecrets, SecretsManagerSharedSecrets
from distiller.api.auth import decode_shared_secret
from distiller.core.partners import partner_from_record
from distiller.deliver.health import HELD_COLLECTION
from distiller_tools.local.receiver import WebhookReceiver
from distiller_tools.partners.cli import NOT_SHOWN_AGAIN, Dependencies, main
from distiller_tools.world import load_partners

REGION = "us-east-2"
PREFIX = "trigger-distiller/partners/"
PUBLIC_URL = "https://hooks.partner.example/privateauto"
ADDRESSES = {"hooks.partner.example": ["93.184.216.34"], "inside.partner.example": ["10.1.2.3"]}


def resolver(host: str, port: int) -> list[str]:
    if host not in ADDRESSES:
        raise OSError("Name or service not known")
    return ADDRESSES[host]


def run(argv: list[str], deps: Dependencies | None = None) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(argv, stdout, stderr, deps or Dependencies(resolver=resolver))
    return code, stdout.getvalue(), stderr.getvalue()


def printed_secrets(out: str) -> dict[str, str]:
    """The secrets `add` / `rotate-secret` printed: {"webhook": ..., "shared": ...}."""
    found = {}
    for line in out.splitlines():
        label, _, value = line.partition(": ")
        if label.startswith(("webhook secret", "shared secret")):
            found[label.split()[0]] = value
    return found


# -- local partners file ---------------------------------------------------------------------------


@pytest.fixture
def partners_file(tmp_path: Path) -> Path:
    path = tmp_path / "partners.json"
    source = Path(__file__).resolve().parents[2] / "events" / "partners.json"
    path.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def test_local_add_stores_both_secrets_in_the_file_and_prints_them_once(partners_file):
    code, out, err = run(
        [
            *("add", "newco", "--url", PUBLIC_URL, "--events", "deal.*,offer.created", "--scope", "appSource"),
            *("--leads-rate-limit", "30/60", "--partners-file", str(partners_file)),
        ]
    )
    assert code == 0, err
    shown = printed_secrets(out)
    assert set(shown) == {"webhook", "shared"} and NOT_SHOWN_AGAIN in out
    assert not any(value in err for value in shown.values())  # never on stderr

    records = load_partners(partners_file)  # what `distiller run` reads: still valid
    record = next(r for r in records if r["partnerId"] == "newco")
    assert record["webhook"] == {"url": PUBLIC_URL, "events": ["deal.*", "offer.created"], "secret": shown["webhook"]}
    assert record["sharedSecret"] == shown["shared"] and decode_shared_secret(shown["shared"])
    assert (record["active"], record["webhookScope"], record["leadsRateLimit"]) == (
        False,
        "appSource",
        {"requests": 30, "perSeconds": 60},
    )
    assert partner_from_record(record).events == ("deal.*", "offer.created")


def test_local_add_refuses_an_existing_id_and_bad_input_without_writing(partners_file):
    before = partners_file.read_text(encoding="utf-8")
    cases = [
        (["add", "acme-motors", "--url", PUBLIC_URL], "partner 'acme-motors' already exists"),
        (["add", "n", "--url", "http://hooks.partner.example/x"], "scheme 'http' refused"),
        (["add", "n", "--url", "https://inside.partner.example/x"], "resolves to a private address (RFC 1918)"),
        (["add", "n", "--url", PUBLIC_URL, "--events", "dael.*"], "'dael.*' matches no catalog event"),
        (["add", "n/1", "--url", PUBLIC_URL], "partner id 'n/1'"),
        (["add", "n", "--url", PUBLIC_URL, "--scope", "organization"], "scope organization needs --organization-id"),
    ]
    for argv, message in cases:
        code, out, err = run([*argv, "--partners-file", str(partners_file)])
        assert (code, out) == (2, ""), argv
        assert message in err, (argv, err)
    assert partners_file.read_text(encoding="utf-8") == before


def test_local_show_list_set_disable_enable(partners_file):
    where = ["--partners-file", str(partners_file)]
    code, out, _ = run(["show", "bayside-auto", *where])
    assert code == 0
    assert "webhook secret: MISSING" in out and "shared secret: stored" in out
    assert "bG9jYWwt" not in out  # the stored shared secret is never shown

    code, out, _ = run(["list", *where])
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split("  ")[0] == "PARTNER" and [h.strip() for h in header.split("  ") if h.strip()] == [
        *("PARTNER", "ACTIVE", "STATE", "SCOPE", "URL HOST", "EVENTS", "PAUSED SINCE", "LAST PROBE", "HELD")
    ]
    bayside = next(row.split() for row in rows if row.startswith("bayside-auto "))
    assert bayside == ["bayside-auto", "yes", "active", "both", "bayside-auto.example", "4", "-", "-", "-"]

    code, _, err = run(["set", "acme-motors", "--events", "deal.*", "--link-platform", "dealnow", *where])
    assert code == 0, err
    acme = next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")
    assert acme["webhook"]["events"] == ["deal.*"] and acme["linkPlatform"] == "dealnow"
    assert acme["webhook"]["secret"] == "local-dev-only-acme-motors-webhook-secret"  # kept
    assert acme["webhookScope"] == "organization" and acme["leadOrganizationIds"]  # untouched

    assert run(["disable", "acme-motors", *where])[0] == 0
    assert next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")["active"] is False
    assert run(["enable", "acme-motors", *where])[0] == 0
    assert next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")["active"] is True

    assert run(["set", "acme-motors", *where])[0] == 2  # nothing to change
    code, _, err = run(["show", "nobody", *where])
    assert code == 2 and "no partner 'nobody'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "acme-motors"],
        ["set", "acme-motors", "--events", "deal.*"],
        ["disable", "acme-motors"],
        ["rotate-secret", "acme-motors"],
        ["test", "acme-motors", "--event", "deal.created", "--allow-private-endpoints"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_hand_edited_record_of_the_wrong_shape_is_named_not_a_traceback(partners_file, argv):
    records = json.loads(partners_file.read_text(encoding="utf-8"))
    records[0]["webhook"] = "https://acme-motors.example/hooks"  # a string where an object belongs
    partners_file.write_text(json.dumps(records), encoding="utf-8")
    before = partners_file.read_bytes()

    code, _, err = run([*argv, "--partners-file", str(partners_file)])

    assert code == 2, err
    assert "'acme-motors'.webhook: expected an object, got str" in err
    assert "Traceback" not in err and partners_file.read_bytes() == before


def test_a_test_ping_names_one_event_not_a_wildcard(partners_file):
    code, _, err = run(["test", "acme-motors", "--event", "deal.*", "--partners-file", str(partners_file)])
    assert code == 2 and "a test sends one event: name it exactly" in err


def test_set_refuses_a_stored_record_with_an_unknown_key(partners_file):
    records = json.loads(partners_file.read_text(encoding="utf-8"))
    records[0]["webhookRetries"] = 5
    partners_file.write_text(json.dumps(records), encoding="utf-8")
    code, _, err = run(["set", "acme-motors", "--events", "*", "--partners-file", str(partners_file)])
    assert code == 2
    assert "partner 'acme-motors': unknown key(s) webhookRetries" in err


def test_local_rotate_secret_replaces_only_the_chosen_secret(partners_file):
    where = ["--partners-file", str(partners_file)]
    code, out, err = run(["rotate-secret", "acme-motors", *where])
    assert code == 0 and "restart them" in err
    new_webhook = printed_secrets(out)["webhook"]
    acme = next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")
    assert acme["webhook"]["secret"] == new_webhook != "local-dev-only-acme-motors-webhook-secret"
    assert acme["sharedSecret"] == "bG9jYWwtZGV2LW9ubHktYWNtZS1tb3RvcnMtc2hhcmVkLXNlY3JldA=="

    code, out, _ = run(["rotate-secret", "acme-motors", "--shared", *where])
    assert code == 0 and set(printed_secrets(out)) == {"shared"}
    acme = next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")
    assert acme["sharedSecret"] == printed_secrets(out)["shared"] and acme["webhook"]["secret"] == new_webhook


def test_local_commands_work_on_a_paused_record_and_enable_resumes_it(partners_file):
    where = ["--partners-file", str(partners_file)]
    records = json.loads(partners_file.read_text(encoding="utf-8"))
    pause = {"pausedAt": "2026-04-21T09:30:00.000Z", "reason": "5 consecutive deliveries dead-lettered"}
    records[0].update(state="paused", health=pause)  # acme-motors, as a hand-copied deployed record
    partners_file.write_text(json.dumps(records), encoding="utf-8")

    code, out, err = run(["show", "acme-motors", *where])
    assert code == 0, err
    assert "state: paused since 2026-04-21T09:30:00.000Z: 5 consecutive deliveries dead-lettered" in out
    assert "held: the partners file keeps no held deliveries" in out
    code, out, err = run(["list", *where])
    assert next(r.split() for r in out.splitlines() if r.startswith("acme-motors "))[2:3] == ["paused"]
    assert "partners: 'acme-motors' paused since 2026-04-21T09:30:00.000Z" in err
    assert run(["set", "acme-motors", "--events", "deal.*", *where])[0] == 0
    assert run(["disable", "acme-motors", *where])[0] == 0
    acme = next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")
    assert (acme["state"], acme["active"], acme["webhook"]["events"]) == ("paused", False, ["deal.*"])  # kept

    code, _, err = run(["enable", "acme-motors", *where])
    assert code == 0, err
    acme = next(r for r in load_partners(partners_file) if r["partnerId"] == "acme-motors")
    assert "state" not in acme and acme["active"] is True
    assert acme["health"]["resumedBy"] == "partners enable" and acme["health"]["resumedAt"].endswith("Z")
    assert partner_from_record(acme).paused is False
    assert "'acme-motors' resumed (was paused since" in err and "the partners file keeps no held deliveries" in err
    code, _, err = run(["enable", "acme-motors", *where])
    assert code == 0 and "already active and not paused: nothing changed" in err


# -- Mongo + Secrets Manager -----------------------------------------------------------------------


@pytest.fixture
def stack(monkeypatch) -> Iterator[tuple[Dependencies, Any, Any]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        database = mongomock.MongoClient(tz_aware=True)["privateauto"]
        opened: list[tuple[str, str]] = []

        def collection(uri: str, name: str) -> Any:
            opened.append((uri, name))
            return database["partners"]

        deps = Dependencies(
            resolver=resolver,
            mongo_collection=collection,
            secrets_client=lambda region: boto3.client("secretsmanager", region_name=region or REGION),
        )
        yield deps, database, boto3.client("secretsmanager", region_name=REGION)
        assert all(uri == "mongodb://db.example:27017" for uri, _ in opened)


MONGO = ["--mongo-uri", "mongodb://db.example:27017", "--region", REGION]


def test_mongo_add_writes_the_record_and_both_secrets_where_the_functions_read_them(stack):
    deps, database, sm = stack
    code, out, err = run(["add", "acme", "--url", PUBLIC_URL, "--events", "*", *MONGO], deps)
    assert code == 0, err
    shown = printed_secrets(out)
    stored = database["partners"].find_one({"partnerId": "acme"}, {"_id": 0})
    assert stored == {"partnerId": "acme", "active": False, "webhook": {"url": PUBLIC_URL, "events": ["*"]}}
    webhook_name, shared_name = f"{PREFIX}acme/webhook-secret", f"{PREFIX}acme/shared-secret"
    assert sm.get_secret_value(SecretId=webhook_name)["SecretString"] == shown["webhook"]
    assert sm.get_secret_value(SecretId=shared_name)["SecretString"] == shown["shared"]
    # The stack's own readers find them: the Dispatcher's webhook secret, the API's shared secret.
    assert PartnerSecrets(PREFIX).webhook_secret("acme") == shown["webhook"]
    assert SecretsManagerSharedSecrets(PREFIX).shared_secret("acme") == shown["shared"]

    code, out, err = run(["add", "acme", "--url", PUBLIC_URL, *MONGO], deps)
    assert (code, out) == (2, "") and "already exists" in err
    assert sm.get_secret_value(SecretId=webhook_name)["SecretString"] == shown["webhook"]  # not replaced


def test_mongo_show_set_enable_rotate(stack):
    deps, database, sm = stack
    database["partners"].insert_one({"partnerId": "lendco", "active": True, "webhook": {"url": PUBLIC_URL}})
    code, out, _ = run(["show", "lendco", *MONGO], deps)
    assert code == 0 and "webhook secret: MISSING" in out and f"{PREFIX}lendco/shared-secret" in out

    code, _, err = run(["set", "lendco", "--lead-organization-ids", "o1,o2", "--leads-rate-limit", "5/1", *MONGO], deps)
    assert code == 0, err
    assert run(["disable", "lendco", *MONGO], deps)[0] == 0
    stored = database["partners"].find_one({"partnerId": "lendco"}, {"_id": 0})
    assert stored["leadOrganizationIds"] == ["o1", "o2"] and stored["leadsRateLimit"] == {
        "requests": 5,
        "perSeconds": 1,
    }
    assert stored["active"] is False and stored["webhook"] == {"url": PUBLIC_URL}

    code, out, err = run(["rotate-secret", "lendco", *MONGO], deps)
    assert code == 0 and "60 minutes (SECRET_CACHE_SECONDS)" in err and "401 or 403" in err
    name = f"{PREFIX}lendco/webhook-secret"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == printed_secrets(out)["webhook"]
    code, out, _ = run(["rotate-secret", "lendco", *MONGO], deps)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == printed_secrets(out)["webhook"]  # put, not create

    code, out, _ = run(["list", *MONGO], deps)
    assert code == 0
    assert out.splitlines()[1].split() == [
        "lendco",
        "no",
        "active",
        "both",
        "hooks.partner.example",
        "*",
        "-",
        "-",
        "0",
    ]
    assert run(["rotate-secret", "nobody", *MONGO], deps)[0] == 2


def test_mongo_show_and_list_show_the_pause_and_the_held_count(stack):
    deps, database, _ = stack
    paused_at, probed_at = (
        dt.datetime(2026, 4, 21, 9, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 4, 21, 9, 35, tzinfo=dt.UTC),
    )
    database["partners"].insert_many(
        [{"partnerId": p, "active": True, "webhook": {"url": PUBLIC_URL}} for p in ("acme", "lendco")]
    )
    health = MongoPartnerHealth(database)  # the stack's own writers of the pause and the probe
    assert health.pause("acme", "every attempt failed since 2026-04-20T09:30:00.000Z (24 h or more)", paused_at)
    health.probed("acme", probed_at, "HTTP 503")
    database[HELD_COLLECTION].insert_many([{"partnerId": "acme", "eventId": f"e{n}"} for n in range(4)])

    code, out, err = run(["show", "acme", *MONGO], deps)
    assert code == 0, err
    assert (
        "state: paused since 2026-04-21T09:30:00.000Z: every attempt failed since 2026-04-20T09:30:00.000Z "
        "(24 h or more); last probe 2026-04-21T09:35:00.000Z (HTTP 503); deliveries are held, not sent" in out
    )
    assert "held: 4 deliveries held (`distiller partners enable acme` resumes at once" in out
    code, out, _ = run(["show", "lendco", *MONGO], deps)
    assert "state: active\nheld: 0 deliveries held\n" in out

    code, out, err = run(["list", *MONGO], deps)
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["acme"][2:] == [
        "paused",
        "both",
        "hooks.partner.example",
        "*",
        "2026-04-21T09:30:00.000Z",
        "2026-04-21T09:35:00.000Z",
        "4",
    ]
    assert rows["lendco"][2:] == ["active", "both", "hooks.partner.example", "*", "-", "-", "0"]
    assert "partners: 'acme' paused since 2026-04-21T09:30:00.000Z: every attempt failed" in err

    code, _, err = run(["disable", "acme", *MONGO], deps)
    assert code == 0 and "4 deliveries held for 'acme' stay held until `distiller partners enable acme`" in err


# -- test pings ------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, io.StringIO]]:
    out = io.StringIO()
    server = WebhookReceiver(0, "the-receivers-secret", out)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, out
    server.shutdown()
    server.server_close()


def test_ping_reaches_a_receiver_that_verifies_the_signature(partners_file, receiver):
    server, received = receiver
    where = ["--partners-file", str(partners_file)]
    local = ["--allow-private-endpoints"]
    assert run(["add", "pinged", "--url", f"{server.url}/hooks", *local, *where])[0] == 0
    # The receiver holds another secret: the ping is refused (401) and the command says so.
    code, out, err = run(["test", "pinged", "--event", "offer.created", *local, *where])
    assert code == 1 and "HTTP 401" in err
    result = json.loads(out)
    assert result["statusCode"] == 401 and "X-PA-Signature does not match" in result["responseBodyExcerpt"]

    records = json.loads(partners_file.read_text(encoding="utf-8"))
    next(r for r in records if r["partnerId"] == "pinged")["webhook"]["secret"] = server.secret
    partners_file.write_text(json.dumps(records), encoding="utf-8")
    code, out, err = run(["test", "pinged", "--event", "offer.created", *local, *where])
    assert code == 0, err
    result = json.loads(out)
    assert (result["statusCode"], result["delivered"]) == (200, True) and result["latencyMs"] >= 0
    assert result["eventId"].startswith("test-") and "accepted" in result["responseBodyExcerpt"]
    accepted = json.loads(received.getvalue().splitlines()[-1])
    assert (accepted["eventId"], accepted["event"], accepted["partner"], accepted["path"]) == (
        result["eventId"],
        "offer.created",
        "pinged",
        "/hooks",
    )
    assert "nothing was written to the delivery log or any queue" in err
    assert "'pinged' is inactive; the stack would not send it this event" in err  # added inactive


def test_ping_applies_the_ssrf_rules_at_send_time(partners_file, receiver):
    server, received = receiver
    where = ["--partners-file", str(partners_file)]
    assert run(["add", "p", "--url", f"{server.url}/x", "--allow-private-endpoints", *where])[0] == 0
    code, out, _ = run(["test", "p", *where])  # without --allow-private-endpoints: loopback refused
    assert code == 1 and "endpoint refused" in json.loads(out)["error"]
    # A record whose host now resolves inside is refused by the sender, not contacted.
    records = json.loads(partners_file.read_text(encoding="utf-8"))
    next(r for r in records if r["partnerId"] == "acme-motors")["webhook"]["url"] = "https://inside.partner.example/"
    partners_file.write_text(json.dumps(records), encoding="utf-8")
    code, out, _ = run(["test", "acme-motors", *where])
    assert code == 1 and "resolves to a private address" in json.loads(out)["error"]
    assert received.getvalue() == ""


def test_ping_against_mongo_writes_nothing_but_reads_the_secret_from_secrets_manager(stack, receiver):
    deps, database, sm = stack
    server, received = receiver
    assert run(["add", "m", "--url", server.url, "--allow-private-endpoints", *MONGO], deps)[0] == 0
    sm.put_secret_value(SecretId=f"{PREFIX}m/webhook-secret", SecretString=server.secret)
    code, out, err = run(["test", "m", "--allow-private-endpoints", *MONGO], deps)
    assert code == 0, err
    assert json.loads(received.getvalue())["eventId"] == json.loads(out)["eventId"]
    assert database.list_collection_names() == ["partners"]  # no delivery log, nothing else


def test_secrets_never_reach_the_log(stack, caplog):
    deps, _, _ = stack
    with caplog.at_level("INFO"):
        code, out, err = run(["add", "quiet", "--url", PUBLIC_URL, *MONGO], deps)
        code2, out2, _ = run(["rotate-secret", "quiet", "--shared", *MONGO], deps)
    assert code == code2 == 0
    values = [*printed_secrets(out).values(), *printed_secrets(out2).values()]
    assert len(values) == 3
    assert not any(value in caplog.text or value in err for value in values)


def test_a_change_writes_only_what_it_changed_so_a_pause_meanwhile_survives():
    from distiller_tools.partners.stores import MongoPartners

    collection = mongomock.MongoClient(tz_aware=True)["privateauto"]["partners"]
    collection.insert_one({"partnerId": "acme", "active": True, "webhook": {"url": "https://a.example/h"}})
    store = MongoPartners(collection, "mongo")
    before = store.get("acme")
    assert before is not None
    # The Dispatcher pauses the partner between the command's read and its write.
    assert MongoPartnerHealth(collection.database).pause("acme", "5 dead letters", dt.datetime.now(dt.UTC))

    store.replace({**before, "webhook": {"url": "https://b.example/h"}, "webhookScope": "organization"}, before)

    stored = collection.find_one({"partnerId": "acme"})
    assert stored["webhook"] == {"url": "https://b.example/h"} and stored["webhookScope"] == "organization"
    assert stored["state"] == "paused" and stored["health"]["reason"] == "5 dead letters"
    store.replace({k: v for k, v in before.items() if k != "active"}, before)  # a removed key is unset
    assert "active" not in collection.find_one({"partnerId": "acme"})
