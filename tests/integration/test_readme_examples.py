"""The README's write-API example runs as written against `distiller api`, and does what it says.

The block after `<!-- example: write-api -->` is run by bash from the repository root, on a free
port instead of 8080; its output is read back: the deal, the redirect, the lead, the duplicate's
409 and the lead's status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- example: write-api -->"


def example_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```sh\n(.*?)\n```", after, re.DOTALL)
    assert match, f"no ```sh block after {MARKER}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not shutil.which("curl") or not shutil.which("node"), reason="needs curl and node")
def test_the_write_api_example_works_against_distiller_api(tmp_path):
    block = example_block()
    assert block.count("8080") >= 5  # the port is the only thing changed
    script = block.replace("8080", str(free_port()))
    # The README runs from a checkout with `make install`'s .venv; the tests may run from another.
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = script.replace(".venv/bin/", f"{bin_dir}/")
    process = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    assert process.returncode == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    deal = json.loads(lines[0])
    assert set(deal) == {"dealId", "guid", "buyerLink", "sellerLink"}
    assert deal["buyerLink"].startswith("https://app.dealnow.com/") and deal["guid"] in deal["buyerLink"]
    status, location = lines[1].split(" ", 1)
    assert status == "302" and location.startswith("https://app.dealnow.com/") and "role=buyer" in location
    assert lines[2].startswith("HTTP/1.1 201")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[3:] if ":" in line)}
    assert headers["ratelimit-limit"] == "30"  # bayside-auto's own leadsRateLimit
    bodies = [json.loads(line) for line in lines if line.startswith("{")]
    created, duplicate, found = bodies[1], bodies[2], bodies[3]
    assert created["status"] == "new" and created["callerReferenceId"] == "LDR-98234"
    assert duplicate["leadId"] == created["leadId"]
    assert found["leadId"] == created["leadId"] and found["status"] == "new"
