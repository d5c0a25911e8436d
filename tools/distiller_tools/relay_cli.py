"""`distiller replay` and `distiller relay`: the change-stream relay and replay from a developer's shell.

Argument parsing, printing and the ad hoc clients (a MongoClient from `--mongo-uri`, SQS queues
from `--queue-url`) are tooling, so they live here and not in the Lambda layer; the layer's
`Relay` and `replay` do the work, exactly as the Relay function runs them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import IO, Any, TextIO

from pymongo.errors import PyMongoError

from distiller.adapters.checkpoints import MongoCheckpointStore
from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.queues import DeadLetters, MessageQueue, OutgoingMessage, region_of
from distiller.core.clock import parse_instant, utc_now
from distiller.core.lookups import LookupFailure
from distiller.deliver.claim_check import PayloadStore
from distiller.relay.loop import Relay
from distiller.relay.replay import replay
from distiller.relay.stream import (
    CHECKPOINTS_COLLECTION,
    DEFAULT_COLLECTIONS,
    DEFAULT_RELAY_NAME,
    RelayError,
    StartAt,
    iso,
    parse_start_at,
    parse_token,
)
from distiller_tools.mongo import open_database
from distiller_tools.ops.cli import add_filter_arguments
from distiller_tools.ops.delivery_replay import DeliveryReplay
from distiller_tools.ops.dlq_filter import delivery_filter, summary_lines
from distiller_tools.partners.records import InputError


def _iso_argument(text: str) -> dt.datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; no zone means UTC") from exc


def _token_argument(text: str) -> dict[str, str]:
    try:
        return parse_token(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _start_at_argument(text: str) -> StartAt:
    try:
        return parse_start_at(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
        return value

    return parse


def _add_database_arguments(cmd: argparse.ArgumentParser, verb: str) -> None:
    cmd.add_argument(
        "--mongo-uri",
        default=os.environ.get("MONGODB_URI"),
        metavar="URI",
        help="MongoDB connection string of the replica set (default: $MONGODB_URI)",
    )
    cmd.add_argument("--database", default="privateauto", help="database to watch (default: privateauto)")
    cmd.add_argument(
        "--collection",
        action="append",
        dest="collections",
        metavar="NAME",
        help=f"a collection to {verb}; repeat for more (default: every collection the distiller reads)",
    )


def register(subparsers: Any) -> None:
    """Add `distiller replay` and `distiller relay` to the CLI's subparsers.

    Their handlers are `args.run(args, stdin, stdout, stderr)`.
    """
    _register_replay(subparsers)
    _register_relay(subparsers)


def _register_replay(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "replay",
        help="re-emit a range of the MongoDB change stream to the ingest queue, or as JSON Lines",
        description="Read the change stream of a self-managed replica set from a time (--since) or after a "
        "resume token (--after-token), up to --until (default: now) or until caught up, and send each change "
        "to the ingest queue (--queue-url) or print it as a JSON line (pipe into `distiller distill`). "
        "Replayed changes carry their original resume tokens, so their eventIds are the original ones. "
        "With --partner or --event (or --delivery-queue-url) the replay is of deliveries instead: the changes are "
        "distilled here (partners and linked entities from the same database) and only the matching deliveries "
        "go to the delivery queue (or stdout), with their original eventIds, in a new round of attempts. "
        "--dry-run counts what would be sent, per partner and event, and sends nothing.",
    )
    start = cmd.add_mutually_exclusive_group(required=True)
    start.add_argument("--since", type=_iso_argument, metavar="ISO", help="first cluster time to replay (inclusive)")
    start.add_argument(
        "--after-token", type=_token_argument, metavar="TOKEN", help="replay after this resume token (_data hex)"
    )
    cmd.add_argument("--until", type=_iso_argument, metavar="ISO", help="last cluster time to replay (default: now)")
    _add_database_arguments(cmd, "replay")
    cmd.add_argument("--queue-url", metavar="URL", help="send to this SQS ingest queue (default: JSON Lines on stdout)")
    add_filter_arguments(cmd, "", times=False)
    cmd.add_argument(
        "--delivery-queue-url",
        metavar="URL",
        help="replay deliveries, not changes: send the matching ones to this SQS delivery queue "
        "(with --partner/--event and no queue: delivery messages as JSON Lines on stdout)",
    )
    cmd.add_argument(
        "--documents-bucket",
        metavar="BUCKET",
        help="with a delivery replay: sign document links as the Distiller does (without it, deliveries "
        "carrying documents are reported and not sent)",
    )
    cmd.add_argument("--documents-prefix", default="", metavar="PREFIX", help="key prefix of the documents")
    cmd.add_argument(
        "--claim-check-bucket",
        metavar="BUCKET",
        help="with a delivery replay: the stack's claim-check bucket, for payloads too large for a queue message "
        "(without it, such deliveries are reported and not sent)",
    )
    cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="distill and count what would be sent, per partner and event; send nothing",
    )
    cmd.set_defaults(run=run_replay)


#: The checkpoint name of `distiller relay` without --queue-url: printing never moves the Lambda's checkpoint.
STDOUT_RELAY_NAME = f"{DEFAULT_RELAY_NAME}-stdout"


def _register_relay(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "relay",
        help="forward the MongoDB change stream from the relay's checkpoint to the ingest queue, or as JSON Lines",
        description="What the Relay function does, from a shell: read the change stream of a self-managed replica "
        "set from the checkpoint of relay --name (collection relay_checkpoints in --database), send each change to "
        "the ingest queue (--queue-url) or print it as a JSON line, and checkpoint what was sent. A change too big "
        "for one SQS message is parked (--dead-letter-queue-url) and the relay moves past it. Stops once caught "
        "up, or after --max-seconds / --max-events. With no checkpoint yet it refuses to start unless --start-at "
        "says where.",
    )
    cmd.add_argument(
        "--start-at",
        type=_start_at_argument,
        metavar="now|ISO|TOKEN",
        help="where to start while relay --name has no checkpoint: `now` (the current time), an ISO 8601 time "
        "(startAtOperationTime; no zone means UTC; the oplog must still hold it) or a resume token (_data hex; "
        "resumeAfter). Ignored once a checkpoint exists: the checkpoint always wins. Without it, a relay with no "
        "checkpoint refuses to start.",
    )
    _add_database_arguments(cmd, "relay")
    cmd.add_argument(
        "--name",
        metavar="NAME",
        help=f"checkpoint name (default: {DEFAULT_RELAY_NAME}, the Lambda's own, with --queue-url; "
        f"{STDOUT_RELAY_NAME} without, so printing never moves the Lambda's checkpoint)",
    )
    cmd.add_argument("--queue-url", metavar="URL", help="send to this SQS ingest queue (default: JSON Lines on stdout)")
    cmd.add_argument(
        "--dead-letter-queue-url",
        metavar="URL",
        help="park changes too big for SQS on this ingest dead-letter queue, then move on. Without it: printed "
        "to stderr (with their reason) when writing to stdout; with --queue-url the relay stops before such a "
        "change instead, its checkpoint left before it",
    )
    cmd.add_argument(
        "--max-seconds",
        type=_positive(float),
        metavar="S",
        help="keep following the stream for this long, even when caught up (default: stop once caught up)",
    )
    cmd.add_argument("--max-events", type=_positive(int), metavar="N", help="stop after reading this many changes")
    cmd.set_defaults(run=run_relay)


def _sqs_queue(queue_url: str) -> Any:
    import boto3

    from distiller.adapters.queues import SqsQueue

    session = boto3.Session()
    client = session.client("sqs", region_name=session.region_name or region_of(queue_url))
    return SqsQueue(client, queue_url)


def _make_sink(queue_url: str | None, stdout: IO[str]) -> MessageQueue | IO[str]:
    if not queue_url:
        return stdout
    return _sqs_queue(queue_url)


class LinesOut:
    """A `MessageQueue` that prints each body as one line (JSON Lines `distiller distill` reads)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        self._stream.write("".join(m.body + "\n" for m in messages))
        self._stream.flush()
        return []


class PrintedDeadLetters:
    """`DeadLetters` on a text stream (stderr): a line with the reason, then the parked message as JSON."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def park(self, record: Any, reason: str, origin: str) -> bool:
        body = json.dumps({"reason": reason, "origin": origin, "record": record}, default=str)
        self._stream.write(f"distiller: relay: parked {origin}: {reason}\n{body}\n")
        self._stream.flush()
        return True


def _open_database(uri: str, database: str, appname: str = "trigger-distiller-replay") -> Any:
    return open_database(uri, database, appname)


def _checked_source(verb: str, args: argparse.Namespace, stderr: IO[str]) -> list[str] | None:
    """The collections to read, once `--mongo-uri` and `--collection` are usable; None (message printed)."""
    if not args.mongo_uri:
        print(f"distiller: {verb}: --mongo-uri is required (or set $MONGODB_URI)", file=stderr)
        return None
    if not re.match(r"mongodb(\+srv)?://", args.mongo_uri):
        print(f"distiller: {verb}: --mongo-uri must start with mongodb:// or mongodb+srv://", file=stderr)
        return None
    collections = [c.strip() for c in (args.collections or DEFAULT_COLLECTIONS) if c.strip()]
    if not collections:
        print(f"distiller: {verb}: --collection needs a name", file=stderr)
        return None
    return collections


def _stream_failure(prefix: str, exc: Exception, stderr: IO[str]) -> int:
    """A relay or replay that stopped: one line on stderr, exit 1."""
    if isinstance(exc, PyMongoError):
        print(f"distiller: {prefix}MongoDB: {' '.join(str(exc).split())}", file=stderr)
    else:
        print(f"distiller: {prefix}{exc}", file=stderr)
    return 1


def run_replay(
    args: argparse.Namespace,
    stdin: TextIO,
    stdout: IO[str],
    stderr: IO[str],
    *,
    open_database: Callable[[str, str], Any] | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> int:
    """`distiller replay`: 0 done, 1 the replay failed (message on stderr), 2 bad arguments."""
    collections = _checked_source("replay", args, stderr)
    if collections is None:
        return 2
    until = args.until or (now or utc_now)()
    if args.since is not None and until < args.since:
        print(f"distiller: replay: --until {iso(until)} is before --since {iso(args.since)}", file=stderr)
        return 2
    by_delivery = bool(args.partner or args.event or args.delivery_queue_url)
    try:
        only = delivery_filter(args.partner, args.event)
    except InputError as exc:
        print(f"distiller: replay: {exc}", file=stderr)
        return 2
    if by_delivery and args.queue_url:
        print(
            "distiller: replay: --queue-url takes changes for every partner; a replay by partner or event "
            "sends deliveries: use --delivery-queue-url",
            file=stderr,
        )
        return 2
    deliveries: DeliveryReplay | None = None
    try:
        database = (open_database or _open_database)(args.mongo_uri, args.database)
        sink: MessageQueue | IO[str]
        if by_delivery or args.dry_run:
            deliveries = DeliveryReplay(
                MongoLookups(database),
                only,
                (now or utc_now)(),
                out=_sqs_queue(args.delivery_queue_url) if args.delivery_queue_url and not args.dry_run else None,
                lines=stdout,
                dry_run=args.dry_run,
                file_links=_file_links(args.documents_bucket, args.documents_prefix),
                payloads=_payload_store(args.claim_check_bucket),
            )
            sink = deliveries
        else:
            sink = _make_sink(args.queue_url, stdout)
        result = replay(database, args.since, args.after_token, until, sink, collections=collections)
    except (RelayError, PyMongoError, LookupFailure) as exc:
        for problem in deliveries.problems if deliveries is not None else ():  # why its changes failed
            print(f"replay: {' '.join(problem.split())}", file=stderr)
        prefix = "" if isinstance(exc, RelayError) else "replay: "
        return _stream_failure(prefix, exc, stderr)
    if deliveries is not None:
        return _delivery_summary(args, result, deliveries, by_delivery, stderr)
    where = f"to {args.queue_url}" if args.queue_url else "to stdout"
    print(
        f"replayed {result.emitted} change(s) {where}; first {result.first_token or '-'}, "
        f"last {result.last_token or '-'}; stopped: {result.stopped}",
        file=stderr,
    )
    return 0


def _payload_store(bucket: str | None) -> PayloadStore | None:
    """The claim-check store the Dispatcher loads large payloads from (`CLAIM_CHECK_BUCKET`)."""
    if not bucket:
        return None
    import boto3

    from distiller.adapters.payload_store import S3PayloadStore

    return S3PayloadStore(boto3.client("s3"), bucket)


def _file_links(bucket: str | None, prefix: str) -> FileLinks | None:
    """Document links signed with this machine's AWS credentials, as the Distiller signs them."""
    if not bucket:
        return None
    import boto3
    from botocore.config import Config

    return FileLinks(boto3.client("s3", config=Config(signature_version="s3v4")), bucket, prefix)


def _delivery_summary(
    args: argparse.Namespace, result: Any, deliveries: DeliveryReplay, by_delivery: bool, stderr: IO[str]
) -> int:
    """What a delivery-level replay or a dry run did: problems, one line per partner and event, a total."""
    for problem in deliveries.problems:
        print(f"replay: {' '.join(problem.split())}", file=stderr)
    verb = "would be sent" if args.dry_run else "sent"
    for line in summary_lines(deliveries.groups, verb):
        print(f"replay: {line}", file=stderr)
    matched = sum(deliveries.groups.values())
    if args.dry_run and not by_delivery:
        where = args.queue_url or "stdout"
        head = f"dry run: {deliveries.changes} change(s) would be replayed to {where}, making {matched} delivery(ies)"
    elif args.dry_run:
        head = f"dry run: {matched} delivery(ies) ({deliveries.only.describe()}) would be sent"
        head += f" from {deliveries.changes} change(s)"
    else:
        where = args.delivery_queue_url or "stdout"
        head = f"sent {deliveries.sent} delivery(ies) ({deliveries.only.describe()}) to {where}"
        head += f" from {deliveries.changes} change(s)"
    print(
        f"replay: {head}; {deliveries.not_matching} other delivery(ies) not "
        f"matching; {deliveries.problem_count} change(s) not distilled; first {result.first_token or '-'}, "
        f"last {result.last_token or '-'}; stopped: {result.stopped}",
        file=stderr,
    )
    return 0


def run_relay(
    args: argparse.Namespace,
    stdin: TextIO,
    stdout: IO[str],
    stderr: IO[str],
    *,
    open_database: Callable[[str, str], Any] | None = None,
) -> int:
    """`distiller relay`: 0 done, 1 the relay stopped (message on stderr), 2 bad arguments."""
    collections = _checked_source("relay", args, stderr)
    if collections is None:
        return 2
    name = args.name or (DEFAULT_RELAY_NAME if args.queue_url else STDOUT_RELAY_NAME)
    queue: MessageQueue = _sqs_queue(args.queue_url) if args.queue_url else LinesOut(stdout)
    dead_letters: DeadLetters | None
    if args.dead_letter_queue_url:
        dead_letters = _sqs_queue(args.dead_letter_queue_url)
    else:
        dead_letters = None if args.queue_url else PrintedDeadLetters(stderr)
    opener = open_database or functools.partial(_open_database, appname="trigger-distiller-relay")
    try:
        database = opener(args.mongo_uri, args.database)
        relay = Relay(
            database,
            queue,
            MongoCheckpointStore(database[CHECKPOINTS_COLLECTION]),
            name=name,
            collections=collections,
            dead_letters=dead_letters,
            start_at=args.start_at,
        )
        result = relay.run(
            max_seconds=args.max_seconds, max_events=args.max_events, stop_when_idle=args.max_seconds is None
        )
    except (RelayError, PyMongoError) as exc:
        return _stream_failure("relay: ", exc, stderr)
    where = f"to {args.queue_url}" if args.queue_url else "to stdout"
    print(
        f"relayed {result.sent} change(s) {where}; parked {result.parked}; "
        f"checkpoint {name} at {result.checkpoint or '-'}; stopped: {result.stopped}",
        file=stderr,
    )
    return 0
