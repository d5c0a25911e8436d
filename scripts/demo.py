"""`make demo`: partner receivers on 127.0.0.1, the sample flows through `distiller run`, then the API writing.

Part 1: each partner of events/partners.json gets an endpoint on a receiver (its URL rewritten to
http://127.0.0.1:PORT/<partnerId>, one demo secret for all); the receiver fails the first try of
every event so the retries show; retry delays are shortened to seconds.

Part 2: `distiller api --deliver` (run in this process, as the CLI runs it, so the demo can wait for
its deliveries) with a receiver for the partners' webhooks: bayside-auto makes one POST /sell and one
POST /leads (then the same lead again), each with a Bearer JWT signed with its shared secret. The sell's writes
become change events and reach the receiver as signed `listing.created` and `offer.created`
webhooks, which it verifies; leads have no webhook event, so the lead shows its 201 and the
duplicate its 409.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import jwt

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "demo-webhook-secret"  # noqa: S105 - a local demo value
PARTNER = "bayside-auto"


def start_receiver(*options: str) -> tuple[subprocess.Popen[str], str]:
    """A `distiller receiver` on a free port, and its URL (from the banner it prints on stderr)."""
    receiver = subprocess.Popen(  # noqa: S603 - our own console script
        [str(BIN / "distiller"), "receiver", "--port", "0", "--secret", SECRET, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert receiver.stderr is not None
    banner = receiver.stderr.readline().strip()
    print(f"demo: {banner}")
    return receiver, banner.rsplit(" ", 1)[-1]


def accepted_by(receiver: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Stop the receiver; the deliveries it verified and accepted (one JSON line each on its stdout)."""
    receiver.terminate()
    out, _ = receiver.communicate(timeout=10)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main() -> int:
    flows = run_flows()
    writes = run_api_writes()
    return flows or writes


def run_flows() -> int:
    receiver, url = start_receiver("--fail-first", "1")
    try:
        partners = json.loads((ROOT / "events" / "partners.json").read_text())
        for partner in partners:
            partner["webhook"] = {
                **partner.get("webhook", {}),
                "url": f"{url}/{partner['partnerId']}",
                "secret": SECRET,
            }
        with tempfile.TemporaryDirectory() as tmp:
            partners_file = Path(tmp) / "partners.json"
            partners_file.write_text(json.dumps(partners))
            flows = sorted(str(p) for p in (ROOT / "events" / "flows").glob("*.jsonl"))
            command = [
                str(BIN / "distiller"),
                "run",
                "--partners",
                str(partners_file),
                "--world",
                str(ROOT / "events" / "world.json"),
                "--retry-delays",
                "1,2,3",
                "--allow-private-endpoints",
                "--log",
                str(ROOT / ".demo-attempts.jsonl"),
                *flows,
            ]
            print("demo: " + " ".join(Path(c).name if c.startswith(str(ROOT)) else c for c in command[1:]))
            result = subprocess.run(command, check=False)  # noqa: S603
    finally:
        accepted = accepted_by(receiver)
    print(
        f"demo: the receiver verified and accepted {len(accepted)} deliveries "
        f"(attempt log: .demo-attempts.jsonl); distiller run exited {result.returncode}"
    )
    return result.returncode


def run_api_writes() -> int:
    from distiller_tools.local.api_server import DeliverySettings, start
    from distiller_tools.world import in_memory_database, load_world

    receiver, url = start_receiver()
    partners = json.loads((ROOT / "events" / "partners.json").read_text())
    for partner in partners:  # any partner a write routes to is answered on this machine, never on the internet
        partner["webhook"] = {**partner.get("webhook", {}), "url": f"{url}/{partner['partnerId']}", "secret": SECRET}
    bayside = next(p for p in partners if p["partnerId"] == PARTNER)
    bayside.setdefault("leadOrganizationIds", [bayside["organizationId"]])
    database = in_memory_database(partners, load_world(ROOT / "events" / "world.json"))
    attempts_log = ROOT / ".demo-attempts.jsonl"  # after part 1's attempts
    settings = DeliverySettings(retry_delays="1,2,3", allow_private_endpoints=True, log=attempts_log)
    server = start(0, database, partners, delivery=settings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"demo: distiller api --deliver --retry-delays 1,2,3 --allow-private-endpoints: listening on {server.url}")
    try:
        token = bearer(bayside)
        problems = sell(server.url, token) + leads(server.url, token, bayside)
        assert server.delivery is not None
        if not server.delivery.wait_idle(timeout=120):
            problems.append("the deliveries did not settle within 120 s")
    finally:
        server.shutdown()
        server.server_close()
        accepted = accepted_by(receiver)
    events = sorted(a["event"] for a in accepted if a["partner"] == PARTNER)
    print(f"demo: the receiver verified and accepted, for {PARTNER}: {', '.join(events) or 'nothing'}")
    if events != ["listing.created", "offer.created"]:
        problems.append(f"expected listing.created and offer.created for {PARTNER}, got {events}")
    for problem in problems:
        print(f"demo: FAILED: {problem}")
    print(f"demo: attempt log: {attempts_log.name} (appended)")
    return 1 if problems else 0


def bearer(partner: dict[str, Any]) -> str:
    """The Bearer JWT, exactly as the spec's Python snippet makes it."""
    secret = base64.b64decode(partner["sharedSecret"]).decode("utf-8")
    now = int(time.time())
    return jwt.encode({"p": partner["partnerId"], "iat": now, "exp": now + 300}, secret, algorithm="HS256")


def post(url: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def sell(api: str, token: str) -> list[str]:
    # A VIN with no listing yet: a stub listing (listing.created) and the DealNow offer (offer.created)
    body = {"vin": "5YJ3E1EA7KF317000", "year": 2019, "make": "Tesla", "model": "Model 3", "amount": 31000}
    status, answer = post(f"{api}/sell/{PARTNER}", token, body)
    print(f"demo: POST /sell/{PARTNER} {json.dumps(body)} -> {status} {json.dumps(answer)}")
    return [] if status == 201 else [f"POST /sell answered {status}"]


def leads(api: str, token: str, partner: dict[str, Any]) -> list[str]:
    body = {
        "callerReferenceId": f"DEMO-{uuid.uuid4().hex[:8]}",
        "organizationId": partner["leadOrganizationIds"][0],
        "leadCode": "CONQUEST",
        "contact": {"name": "Jane Smith", "email": "jane@example.com", "phone": "555-867-5309"},
        "vehicle": {"vin": "1HGBH41JXMN109186", "year": 2019, "make": "Honda", "model": "Accord"},
    }
    problems: list[str] = []
    for attempt, expected in (("lead", 201), ("the same lead again", 409)):
        status, answer = post(f"{api}/leads/{PARTNER}", token, body)
        print(f"demo: POST /leads/{PARTNER} ({attempt}) -> {status} {json.dumps(answer)}")
        if status != expected:
            problems.append(f"POST /leads ({attempt}) answered {status}, expected {expected}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
