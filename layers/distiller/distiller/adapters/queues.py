"""SQS adapters: the delivery/retry queues and the dead-letter queues. Nothing else touches SQS.

`SendMessageBatch` takes at most 10 entries and 1 MiB in total; batches are packed to both
limits. A send that fails is reported back per message, so the caller can retry exactly the
records whose deliveries did not make it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 1024 * 1024
MAX_DELAY_SECONDS = 900


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: str
    delay_seconds: int = 0


class MessageQueue(Protocol):
    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        """Send all; return the indices of the messages that could not be sent."""
        ...


class DeadLetters(Protocol):
    def park(self, record: Any, reason: str, origin: str) -> bool:
        """Keep a record that cannot be processed, with why and where; False if that failed."""
        ...


class SqsQueue:
    """One SQS queue, by URL, over a boto3 client."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        failed: list[int] = []
        for batch in pack_batches(messages):
            entries = [
                {
                    "Id": str(index),
                    "MessageBody": messages[index].body,
                    "DelaySeconds": min(max(messages[index].delay_seconds, 0), MAX_DELAY_SECONDS),
                }
                for index in batch
            ]
            try:
                response = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                logger.error("SendMessageBatch to %s failed: %s", self.queue_url, exc)
                failed.extend(batch)
                continue
            for failure in response.get("Failed", []):
                logger.error("SendMessageBatch entry failed: %s %s", failure.get("Code"), failure.get("Message"))
                failed.append(int(failure["Id"]))
        return sorted(failed)

    def park(self, record: Any, reason: str, origin: str) -> bool:
        """Put a record that cannot be processed on this (dead-letter) queue, with why and where."""
        body = json.dumps({"reason": reason, "origin": origin, "record": record}, default=str)
        return not self.send([OutgoingMessage(body)])


def pack_batches(messages: Sequence[OutgoingMessage]) -> list[list[int]]:
    """Indices grouped into batches of at most 10 entries and 1 MiB of bodies."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, message in enumerate(messages):
        length = len(message.body.encode("utf-8"))
        if current and (len(current) == MAX_BATCH_ENTRIES or size + length > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        batches.append(current)
    return batches


_QUEUE_URL_REGION = re.compile(r"https?://(?:sqs[.-])?([a-z]{2}(?:-[a-z]+)+-\d)\.")


def region_of(queue_url: str) -> str | None:
    """The AWS region named in a queue URL (`https://sqs.us-east-2.amazonaws.com/...`, the legacy
    `https://us-east-2.queue.amazonaws.com/...`), or None (a local endpoint)."""
    match = _QUEUE_URL_REGION.match(queue_url)
    return match.group(1) if match else None
