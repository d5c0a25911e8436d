"""Lambda's SQS event source mapping, for one queue and one function of the local pipeline.

Each mapping polls its queue on a thread of its own, as Lambda's pollers do: it gathers a batch
of up to the function's `BatchSize` (template.yaml) from as many ReceiveMessage calls of 10 as
the queue has visible messages for (no batching window: a local run does not wait to fill one),
invokes the handler with it, and deletes the messages the handler did not report as failures
with DeleteMessageBatch, 10 per call. A failed message stays on the queue until its visibility
timeout, and a handler that raises leaves the whole batch there, as Lambda would.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
"""A Lambda handler: (event, context) → response."""

SQS_MAX_MESSAGES = 10
"""ReceiveMessage and DeleteMessageBatch take at most 10 messages per call."""
IDLE_POLL_SECONDS = 0.05
"""How long a mapping waits after an empty receive before it polls again."""


@dataclass(frozen=True, slots=True)
class ActivitySnapshot:
    work: int
    """Invocations (and input fed) so far."""
    busy: int
    """Mappings in the middle of a poll."""
    polls: tuple[int, ...]
    """Polls completed so far, per mapping."""

    def quiet_since(self, earlier: ActivitySnapshot) -> bool:
        """Nothing was receivable at some moment after `earlier`: no work done since, nobody polling
        now, and every mapping completed a poll that started after `earlier` (the one under way
        then, if any, ends first) and found its queue empty."""
        return (
            self.work == earlier.work
            and self.busy == 0
            and all(now >= then + 2 for now, then in zip(self.polls, earlier.polls, strict=True))
        )


class Activity:
    """What the mappings of one run have done, read by the run's coordinator in one piece."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = 0
        self._busy = 0
        self._polls: list[int] = []

    def register(self) -> int:
        """A new mapping's index."""
        with self._lock:
            self._polls.append(0)
            return len(self._polls) - 1

    def begin(self) -> None:
        with self._lock:
            self._busy += 1

    def end(self, mapping: int, *, completed: bool, invoked: bool) -> None:
        with self._lock:
            self._busy -= 1
            self._polls[mapping] += completed
            self._work += invoked

    def worked(self) -> None:
        """Work done outside an invocation (the input fed to the ingest queue)."""
        with self._lock:
            self._work += 1

    def snapshot(self) -> ActivitySnapshot:
        with self._lock:
            return ActivitySnapshot(self._work, self._busy, tuple(self._polls))


class EventSourceMapping:
    """One queue → one function's handler, polled on a thread between `start` and `stop`."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        function_name: str,
        batch_size: int,
        *,
        context_for: Callable[[str], Any],
        activity: Activity,
        received: Callable[[list[dict[str, Any]]], None] | None = None,
        before_poll: Callable[[], None] | None = None,
        region: str,
    ) -> None:
        """`received`: told every batch (the SQS messages) before the handler runs; `before_poll`:
        called before each poll (the input feed tops the ingest queue up there)."""
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler = handler
        self.function_name = function_name
        self.batch_size = batch_size
        self.region = region
        self._context_for = context_for
        self._received = received
        self._before_poll = before_poll
        self.activity = activity
        self._index = activity.register()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"esm-{self.function_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                invoked = self.poll_once()
            except Exception as exc:  # the embedded endpoint failed under us: say so, keep polling
                print(f"distiller run: polling {self.queue_url} failed: {exc}", file=sys.stderr)
                invoked = False
            if not invoked:
                self._stop.wait(IDLE_POLL_SECONDS)

    def poll_once(self) -> bool:
        """Receive a batch and hand it to the handler; False when there was nothing to receive."""
        self.activity.begin()
        completed = invoked = False
        try:
            if self._before_poll is not None:
                self._before_poll()
            messages = self._receive_batch()
            if messages:
                self._invoke(messages)
                invoked = True
            completed = True
            return invoked
        finally:
            self.activity.end(self._index, completed=completed, invoked=invoked)

    def _receive_batch(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < self.batch_size:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(SQS_MAX_MESSAGES, self.batch_size - len(messages)),
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            messages.extend(got)
            if len(got) < SQS_MAX_MESSAGES:
                break
        return messages

    def _invoke(self, messages: list[dict[str, Any]]) -> None:
        if self._received is not None:
            self._received(messages)
        event = {"Records": [lambda_record(m, self.queue_arn, self.region) for m in messages]}
        try:
            response = self.handler(event, self._context_for(self.function_name))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception as exc:  # Lambda would retry the whole batch after the visibility timeout
            print(f"distiller run: {self.function_name} failed a batch, it will be retried: {exc}", file=sys.stderr)
            return
        self.delete([m["ReceiptHandle"] for m in messages if m["MessageId"] not in failed])

    def delete(self, receipt_handles: Iterable[str]) -> None:
        """DeleteMessageBatch, 10 per call."""
        handles = list(receipt_handles)
        for start in range(0, len(handles), SQS_MAX_MESSAGES):
            chunk = handles[start : start + SQS_MAX_MESSAGES]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)],
            )


def lambda_record(message: dict[str, Any], arn: str, region: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping presents it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }
