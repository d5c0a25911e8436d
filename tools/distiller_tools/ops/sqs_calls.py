"""The SQS calls a receive/send/delete redrive makes, and how it reads SQS errors."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from distiller.adapters.queues import OutgoingMessage, pack_batches

logger = logging.getLogger(__name__)

#: Error codes an endpoint answers when it has no StartMessageMoveTask.
_UNSUPPORTED_CODES = {
    "invalidaction",
    "unknownoperation",
    "unknownoperationexception",
    "unsupportedoperation",
    "aws.simplequeueservice.unsupportedoperation",
    "notimplemented",
    "notimplementedexception",
    "501",
}
_UNSUPPORTED_WORDS = ("not implemented", "not been implemented", "unknown operation", "not supported")


def move_task_unsupported(exc: BaseException) -> bool:
    """The endpoint has no StartMessageMoveTask (rather than refusing this one)."""
    if isinstance(exc, NotImplementedError | AttributeError):
        return True  # moto in-process; a botocore without the operation
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "")).lower()
    message = str(error.get("Message", "")).lower()
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _UNSUPPORTED_CODES or status == 501:
        return True
    if any(words in message for words in _UNSUPPORTED_WORDS):
        return True
    # botocore names the error by its HTTP status when the answer is not an AWS error at all
    # (moto's server answers an unknown action with an HTML 500 page): not real SQS.
    return code.isdigit() and status in {400, 404, 405, 500}


def send(client: Any, url: str, bodies: list[str]) -> dict[int, str]:
    """Send; return index -> error for the bodies that were not sent."""
    failed: dict[int, str] = {}
    outgoing = [OutgoingMessage(body) for body in bodies]
    for group in pack_batches(outgoing):
        entries = [{"Id": str(index), "MessageBody": bodies[index]} for index in group]
        try:
            response = client.send_message_batch(QueueUrl=url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            failed.update({index: error_text(exc) for index in group})
            continue
        for failure in response.get("Failed", []):
            failed[int(failure["Id"])] = f"{failure.get('Code')}: {failure.get('Message')}"
    return failed


def make_visible(client: Any, url: str, handles: list[str], after_seconds: int = 0) -> None:
    """Messages left behind are visible again at once (or after `after_seconds`: `hold`), not after the
    receive's visibility timeout."""
    for start in range(0, len(handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": after_seconds}
            for i, handle in enumerate(handles[start : start + 10])
        ]
        try:
            client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:  # they come back after the timeout anyway
            logger.warning("could not make left messages visible again: %s", error_text(exc))


def error_text(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = " ".join(str(error.get("Message", "")).split())
        if message.startswith("<"):
            message = "not an AWS error response"
        return f"{error.get('Code', 'error')}: {message[:200]}"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


__all__ = ["error_text", "make_visible", "move_task_unsupported", "send"]
