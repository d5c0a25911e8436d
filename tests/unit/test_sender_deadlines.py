"""The sender's attempt budget: one shared deadline thread cuts a late attempt's socket, never a finished one's."""

from __future__ import annotations

import os
import socket
import threading
from types import SimpleNamespace

import pytest

from distiller.deliver.sender import _Deadlines, _Watchdog

WAIT = 10.0


@pytest.fixture
def connected():
    """A connected socket pair standing in for the attempt's connection and the partner's end."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(WAIT)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_an_attempt_past_its_deadline_has_its_socket_shut_down(connected):
    ours, theirs = connected
    deadlines = _Deadlines()
    watch = _Watchdog(0.05, deadlines)

    with watch:
        watch.connection = SimpleNamespace(sock=ours)  # what _Watched.request records
        assert theirs.recv(1) == b""  # blocks until the deadline thread shuts our end down

    assert watch.fired


def test_a_finished_attempt_is_never_cut_even_after_its_deadline(connected):
    ours, theirs = connected
    deadlines = _Deadlines()
    finished = _Watchdog(0.05, deadlines)
    with finished:
        finished.connection = SimpleNamespace(sock=ours)
    later = _Watchdog(0.2, deadlines)  # a second, later deadline: once it fires, the first one's has passed
    with later:
        later.connection = SimpleNamespace(sock=None)  # nothing to cut
        while not later.fired:
            threading.Event().wait(0.01)

    ours.sendall(b"still open")
    assert theirs.recv(16) == b"still open"
    assert not finished.fired


def test_one_thread_keeps_every_deadline():
    deadlines = _Deadlines()
    before = {t.ident for t in threading.enumerate()}

    for _ in range(50):
        with _Watchdog(30.0, deadlines):
            pass

    started = [t for t in threading.enumerate() if t.ident not in before]
    assert [t.name for t in started] == ["sender-deadlines"]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_forked_child_keeps_deadlines_with_its_own_thread(connected):
    # Given the shared deadlines already running in this process (a warm sender)
    with _Watchdog(30.0):
        pass
    ours, theirs = connected
    reader, writer = os.pipe()

    pid = os.fork()
    if pid == 0:  # the child: a late attempt must still be cut, by a thread of its own
        try:
            watch = _Watchdog(0.05)
            with watch:
                watch.connection = SimpleNamespace(sock=ours)
                theirs.recv(1)
            os.write(writer, b"1" if watch.fired else b"0")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 1)
    os.waitpid(pid, 0)
    os.close(reader)

    assert answer == b"1"


def test_a_failed_thread_start_is_retried_on_the_next_attempt(connected, monkeypatch):
    ours, theirs = connected
    deadlines = _Deadlines()
    real_start = threading.Thread.start
    calls = []

    def start_once_failing(thread: threading.Thread) -> None:
        calls.append(thread.name)
        if len(calls) == 1:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_once_failing)
    with pytest.raises(RuntimeError), _Watchdog(WAIT, deadlines):
        pass
    watch = _Watchdog(0.05, deadlines)
    with watch:
        watch.connection = SimpleNamespace(sock=ours)
        assert theirs.recv(1) == b""  # the second arm started the thread, which cut the late attempt

    assert watch.fired and calls == ["sender-deadlines", "sender-deadlines"]


def test_the_watchdog_is_disarmed_before_the_connection_goes_back_to_the_pool():
    """Once released, the pool may hand the connection to another attempt: a late deadline must not cut it."""
    from distiller.deliver.sender import _read_excerpt

    order: list[str] = []

    class Response:
        def __init__(self) -> None:
            self.chunks = [b'{"ok":true}', b""]

        def read(self, size: int) -> bytes:
            return self.chunks.pop(0)

        def close(self) -> None:
            order.append("close")

        def release_conn(self) -> None:
            order.append("release")

    def finish() -> bool:
        order.append("finish")
        return False

    assert _read_excerpt(Response(), float("inf"), finish) == '{"ok":true}'  # type: ignore[arg-type]
    assert order == ["finish", "release"]  # a clean, complete body keeps its connection

    order.clear()
    fired_first = _read_excerpt(Response(), float("inf"), lambda: order.append("finish") or True)  # type: ignore[arg-type]
    assert fired_first == '{"ok":true}' and order == ["finish", "close", "release"]  # cut: never reused
