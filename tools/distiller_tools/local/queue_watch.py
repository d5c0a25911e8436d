"""What a local run knows of its queues without asking the embedded endpoint, whose SQS scans a
queue's every message on each call: retries waiting (and when each is due), messages not received
yet, and the input, fed to the ingest queue as the Distiller takes it.

The counts come from the sends themselves, through botocore hooks on the session the handlers'
clients come from (`SENDS`), and from what the run's event source mappings receive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from distiller.adapters.queues import MessageQueue, OutgoingMessage

SENDS = ("provide-client-params.sqs.SendMessageBatch", "provide-client-params.sqs.SendMessage")
"""The botocore events a send to a queue raises, with its parameters."""


def _entries(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a SendMessageBatch's or a SendMessage's parameters."""
    return params.get("Entries") or [params]


def first_receives(messages: Iterable[dict[str, Any]]) -> int:
    """How many of these SQS messages are received for the first time (`ApproximateReceiveCount` 1)."""
    return sum(1 for m in messages if m.get("Attributes", {}).get("ApproximateReceiveCount", "1") == "1")


class ScheduledRetries:
    """Retries put on the retry queue and not received yet, with when each is due.

    SQS does not tell when a delayed message becomes visible; the send does (`DelaySeconds`), so a
    botocore hook on the session the handlers' clients come from notes each send to the retry queue.
    """

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self._due: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def sent(self, params: dict[str, Any], **_: Any) -> None:
        """botocore `provide-client-params` handler: note the retries a send puts on the queue."""
        if params.get("QueueUrl") != self.queue_url:
            return
        now = time.time()
        with self._lock:
            for entry in _entries(params):
                self._due.setdefault(entry["MessageBody"], []).append(now + int(entry.get("DelaySeconds") or 0))

    def received(self, bodies: Iterable[str]) -> None:
        """These messages came off the retry queue: no longer waiting."""
        with self._lock:
            for body in bodies:
                times = self._due.get(body)
                if times:
                    times.remove(min(times))
                    if not times:
                        del self._due[body]

    def waiting(self) -> tuple[int, float | None]:
        """How many retries are waiting, and when the earliest is due."""
        with self._lock:
            times = [t for due in self._due.values() for t in due]
        return len(times), min(times, default=None)


class QueueBacklog:
    """Messages sent to one queue and not received yet (each counts until its first receive).

    A send counts when it is made (`sent`, a `SENDS` hook), so an entry SQS refused would count
    until the end of the run: the backlog can only seem longer than it is.
    """

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self._sent = 0
        self._taken = 0
        self._lock = threading.Lock()

    def sent(self, params: dict[str, Any], **_: Any) -> None:
        """botocore `provide-client-params` handler: count the messages a send puts on the queue."""
        if params.get("QueueUrl") == self.queue_url:
            with self._lock:
                self._sent += len(_entries(params))

    def took(self, messages: list[dict[str, Any]]) -> None:
        """`EventSourceMapping.received`: these messages came off the queue."""
        with self._lock:
            self._taken += first_receives(messages)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._sent - self._taken


class InputFeed:
    """The run's input, put on the ingest queue a Distiller batch at a time as the Distiller takes it.

    Queuing all the input at once would make every call to the ingest queue scan all of it; the
    relay, too, sends as it reads. `room` holds the next chunk back while the delivery queue is long.
    """

    def __init__(
        self,
        queue: MessageQueue,
        backlog: QueueBacklog,
        bodies: Sequence[OutgoingMessage],
        chunk: int,
        room: Callable[[], bool],
    ) -> None:
        self.queue = queue
        self.backlog = backlog
        self.bodies = bodies
        self.chunk = chunk
        self.room = room
        self.fed = 0
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return self.fed == len(self.bodies)

    def top_up(self) -> None:
        """Put the next chunk on the queue once the Distiller has taken what was there, if there is room.

        The first chunk's failure raises (a queue that refuses the input fails the run at once); a
        later one is kept in `error` for the run to raise.
        """
        if self.done or self.error is not None or self.backlog.waiting >= self.chunk or not self.room():
            return
        chunk = self.bodies[self.fed : self.fed + self.chunk]
        failed = self.queue.send(chunk)
        if failed:
            self.error = f"{len(failed)} of {len(chunk)} messages refused"
            if self.fed == 0:
                raise RuntimeError("could not put the input on the local ingest queue")
            return
        self.fed += len(chunk)
