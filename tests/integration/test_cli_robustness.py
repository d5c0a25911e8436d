"""The CLI under bad bytes, a reader that goes away and a port that is taken (issue 10, item 7)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distiller_tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
PARTNERS = EVENTS / "partners.json"
WORLD = EVENTS / "world.json"
FLOW = EVENTS / "flows" / "c2d_sell.jsonl"
SCRIPT = Path(sys.executable).with_name("distiller")


def run(argv: list[str], stdin: io.TextIOBase | None = None) -> tuple[int, str, str]:
    """`main(argv)` with captured stdout/stderr; `stdin` as given (default: empty)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin or io.StringIO(""), stdout, stderr
    try:
        code = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, stdout.getvalue(), stderr.getvalue()


def good_lines() -> tuple[bytes, bytes]:
    first, second = FLOW.read_bytes().splitlines()[:2]
    return first, second


def distilled(*lines: bytes) -> list[str]:
    """What `distill` prints for these (good) lines on their own."""
    code, out, err = run(
        ["distill", "--partners", str(PARTNERS), "--world", str(WORLD)],
        io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n"), encoding="utf-8"),
    )
    assert (code, err) == (0, "")
    return out.splitlines()


def test_a_line_that_is_not_utf8_is_one_bad_line_and_the_others_are_distilled(tmp_path):
    first, second = good_lines()
    events = tmp_path / "events.jsonl"
    events.write_bytes(first + b"\n" + b'{"operationType": "insert", "x": "caf\xe9"}\n' + second + b"\n")

    code, out, err = run(["distill", "--partners", str(PARTNERS), "--world", str(WORLD), str(events)])

    assert code == 1
    assert err.splitlines() == [f"error: {events}:2: not UTF-8 text: invalid continuation byte at byte 37"]
    assert out.splitlines() == distilled(first, second) and out


def test_stdin_that_is_not_utf8_is_one_bad_line_and_the_others_are_distilled():
    """Lines end at `\\n`; a `\\r\\n` ending is still a good line."""
    first, second = good_lines()
    data = first + b"\r\n" + b"\xff\xfe{}\r\n" + second + b"\r\n"

    code, out, err = run(
        ["distill", "--partners", str(PARTNERS), "--world", str(WORLD)],
        io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"),
    )

    assert code == 1
    assert err.splitlines() == ["error: <stdin>:2: not UTF-8 text: invalid start byte at byte 0"]
    assert out.splitlines() == distilled(first, second) and out


def test_distill_into_head_exits_quietly():
    """`distiller distill ... | head -1`: no "Broken pipe", no traceback, the exit status of SIGPIPE."""
    flows = [str(p) for p in sorted((EVENTS / "flows").glob("*.jsonl"))]
    # Several times over: far more output than a pipe holds, so the writer is still writing when the
    # reader goes away.
    argv = [str(SCRIPT), "distill", "--partners", str(PARTNERS), "--world", str(WORLD), *flows * 4]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()

    assert json.loads(first)["partnerId"]
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err
    assert (code, err) == (141, "")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 someone else is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["receiver", "--secret", "s"], id="receiver"),
        pytest.param(["api", "--partners", str(PARTNERS), "--world", str(WORLD)], id="api"),
    ],
)
def test_a_server_on_a_taken_port_says_so_in_one_line_and_exits_2(taken_port, command):
    code, out, err = run([command[0], "--port", str(taken_port), *command[1:]])

    assert (code, out) == (2, "")
    assert err == f"distiller: cannot listen on 127.0.0.1:{taken_port}: Address already in use\n"


def test_a_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["receiver", "--port", "70000", "--secret", "s"])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "70000 is not a port number (0..65535)" in err and "Traceback" not in err
