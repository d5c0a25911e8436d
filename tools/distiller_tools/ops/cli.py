"""`distiller dlq redrive` and `distiller deliveries`: argparse, and the commands' output.

stdout carries the results as JSON (the redrive's result, or one line per delivery attempt),
stderr what a person reads (problems, then a summary). Exit status 0 when done, 1 when a
redrive left messages behind, 2 when the command could not run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, TextIO

from botocore.exceptions import BotoCoreError

from distiller.core.clock import parse_instant
from distiller.core.lookups import PARTNERS_COLLECTION
from distiller.deliver.log import DELIVERIES_COLLECTION, DELIVERY_STATUSES
from distiller_tools.mongo import open_database
from distiller_tools.ops.deliveries import (
    LogFileError,
    list_deliveries,
    list_logged_deliveries,
    logged_stats,
    mongo_stats,
    read_log,
    stats_table,
)
from distiller_tools.ops.dlq_filter import delivery_filter, summary_lines
from distiller_tools.ops.redrive import REDRIVE_KINDS, RedriveError, infer_kind, redrive, sqs_client
from distiller_tools.partners.records import InputError


def _iso_argument(text: str) -> dt.datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_filter_arguments(cmd: argparse.ArgumentParser, time_is: str, *, times: bool = True) -> None:
    """`--partner`, `--event` (and `--since`/`--until` unless the command has its own): repeatable or comma lists."""
    cmd.add_argument(
        "--partner", action="append", metavar="P", help="only this partner's deliveries (repeat or P1,P2 for more)"
    )
    cmd.add_argument(
        "--event",
        action="append",
        metavar="E",
        help="only these events: a name or a wildcard as in subscriptions (deal.*, *); repeat or E1,E2 for more",
    )
    if times:
        cmd.add_argument("--since", type=_iso_argument, metavar="ISO", help=f"only from this time on: {time_is}")
        cmd.add_argument("--until", type=_iso_argument, metavar="ISO", help=f"only up to this time: {time_is}")


def register(subparsers: Any) -> None:
    """Add `dlq redrive` and `deliveries` to the `distiller` command's subparsers."""
    dlq = subparsers.add_parser("dlq", help="dead-letter queue operations")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    redrive_cmd = dlq_commands.add_parser(
        "redrive",
        help="move dead-lettered messages back to work",
        description="Move the messages of a dead-letter queue back to the queue it serves (or --to). "
        "Deliveries go back with their attempt count reset and the same eventId; parked ingest records "
        "go back as the original record. Uses SQS StartMessageMoveTask when the bodies can move unchanged "
        "and the endpoint has it; otherwise receives, sends, then deletes, batch by batch. With --partner, "
        "--event, --since or --until only the matching messages move (the others stay, visible again at once); "
        "--dry-run counts what would move, per partner and event, and moves nothing.",
    )
    redrive_cmd.add_argument("--queue-url", required=True, metavar="DLQ_URL", help="the dead-letter queue")
    redrive_cmd.add_argument(
        "--to", metavar="URL", help="destination queue (default: the queue whose redrive policy targets DLQ_URL)"
    )
    redrive_cmd.add_argument(
        "--kind",
        choices=REDRIVE_KINDS,
        help="what the queue holds (default: from its name, *-delivery-dlq or *-ingest-dlq); "
        "raw moves bodies unchanged",
    )
    redrive_cmd.add_argument("--max", type=positive_int, metavar="N", help="move at most N messages")
    redrive_cmd.add_argument("--endpoint-url", metavar="URL", help="SQS endpoint (local emulators)")
    redrive_cmd.add_argument(
        "--no-move-task", action="store_true", help="always receive/send/delete, never StartMessageMoveTask"
    )
    add_filter_arguments(redrive_cmd, "the dead letter's SQS SentTimestamp (when it was dead-lettered)")
    redrive_cmd.add_argument(
        "--dry-run", action="store_true", help="count what would move, per partner and event; move nothing"
    )
    redrive_cmd.set_defaults(run=run_redrive)

    deliveries = subparsers.add_parser(
        "deliveries",
        help="list a partner's webhook delivery attempts, newest first",
        description="One JSON line per delivery attempt, newest first, filtered like the partner API's "
        "GET /data/webhook-deliveries/:partnerId. Reads the delivery log in Mongo, or the JSON Lines "
        "`distiller run --log` writes.",
    )
    deliveries.add_argument("--partner", metavar="P", help="partner id (required, except with --stats)")
    deliveries.add_argument(
        "--stats",
        action="store_true",
        help="a table per partner instead: attempts, delivered, success rate, p50/p95 latency, held, state "
        "(active, inactive, paused), last error",
    )
    deliveries.add_argument("--status", choices=DELIVERY_STATUSES, help="only attempts with this status")
    deliveries.add_argument("--event", metavar="E", help="only this event (e.g. deal.created)")
    deliveries.add_argument(
        "--since", type=_iso_argument, metavar="ISO", help="only attempts at or after this time (no offset: UTC)"
    )
    deliveries.add_argument(
        "--until", type=_iso_argument, metavar="ISO", help="only attempts at or before this time (no offset: UTC)"
    )
    deliveries.add_argument("--event-id", metavar="ID", help="only attempts of this eventId")
    deliveries.add_argument("--limit", type=positive_int, metavar="N", help="at most N (default 100)")
    source = deliveries.add_mutually_exclusive_group(required=True)
    source.add_argument("--mongo-uri", metavar="URI", help="the database holding the delivery log")
    source.add_argument("--log", metavar="FILE", help="JSON Lines written by `distiller run --log`")
    deliveries.add_argument(
        "--database", default="privateauto", help="database name with --mongo-uri (default privateauto)"
    )
    deliveries.set_defaults(run=run_deliveries, deliveries_parser=deliveries)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_redrive(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    kind = args.kind or infer_kind(args.queue_url)
    if kind is None:
        print(
            f"distiller: {args.queue_url}: cannot tell what it holds from its name; "
            f"pass --kind {'|'.join(REDRIVE_KINDS)}",
            file=stderr,
        )
        return 2
    try:
        only = delivery_filter(args.partner, args.event, args.since, args.until)
        client = sqs_client(args.queue_url, args.endpoint_url)
        result = redrive(
            client,
            args.queue_url,
            args.to,
            kind=kind,
            max_messages=args.max,
            use_move_task=not args.no_move_task,
            only=only,
            dry_run=args.dry_run,
        )
    except (RedriveError, InputError, ValueError, BotoCoreError) as exc:
        print(f"distiller: redrive: {_one_line(str(exc))}", file=stderr)
        return 2

    stdout.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
    for problem in result.problems:
        print(f"redrive: {_one_line(problem)}", file=stderr)
    if result.method == "move-task":
        where = result.destination_url or "their original source queues"
        print(
            f"redrive: StartMessageMoveTask started (about {result.approximate_messages} message(s) to {where}); "
            f"task handle {result.task_handle}",
            file=stderr,
        )
        return 0
    for line in summary_lines(result.groups, "would move" if result.dry_run else "matched"):
        print(f"redrive: {line}", file=stderr)
    if result.dry_run:
        print(
            f"redrive: dry run: {result.matched} {kind} message(s) would move to {result.destination_url} "
            f"({result.filter.describe() if result.filter else 'everything'}); {result.not_matching} do not match; "
            f"{result.left} not redrivable; nothing moved",
            file=stderr,
        )
        return 0 if not result.stopped else 1
    summary = f"redrive: moved {result.moved} {kind} message(s) to {result.destination_url} by receive/send/delete"
    if result.fallback_reason:
        summary += f" ({result.fallback_reason})"
    extra = [
        f"{count} {what}"
        for count, what in (
            (result.left, "not redrivable, left in the dead-letter queue"),
            (result.send_failed, "not sent, left in the dead-letter queue"),
            (result.delete_failed, "sent but not deleted (will be sent again by a later redrive)"),
        )
        if count
    ]
    if result.not_matching:
        picked = result.filter.describe() if result.filter else "-"
        extra.append(f"{result.not_matching} not matching ({picked}), left as they were")
    if result.stopped:
        extra.append(f"stopped: {result.stopped}")
    print(summary + ("; " + "; ".join(extra) if extra else ""), file=stderr)
    return 0 if result.complete else 1


def _open_collection(uri: str, database: str) -> Any:
    return open_database(uri, database, "trigger-distiller-ops")[DELIVERIES_COLLECTION]


def _from_delivery_log[T](
    args: argparse.Namespace, stderr: IO[str], from_file: Callable[[Any], T], from_mongo: Callable[[Any], T]
) -> T | None:
    """What `from_file` makes of the `--log` attempts, or `from_mongo` of the `--mongo-uri` delivery log;
    None, with the reason on stderr, when either cannot be read."""
    from pymongo.errors import PyMongoError

    try:
        if args.log:
            try:
                with open(args.log, encoding="utf-8") as handle:
                    attempts = read_log(handle, args.log)
            except OSError as exc:
                print(f"distiller: {args.log}: cannot read: {exc.strerror}", file=stderr)
                return None
            return from_file(attempts)
        return from_mongo(_open_collection(args.mongo_uri, args.database))
    except (ValueError, LogFileError) as exc:
        print(f"distiller: deliveries: {_one_line(str(exc))}", file=stderr)
        return None
    except PyMongoError as exc:
        print(f"distiller: deliveries: database: {_one_line(str(exc))[:300]}", file=stderr)
        return None


def run_deliveries(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    if args.stats:
        return run_delivery_stats(args, stdout, stderr)
    if not args.partner:  # argparse's own words and exit status, as when --partner was required
        args.deliveries_parser.error("the following arguments are required: --partner")
    args.limit = 100 if args.limit is None else args.limit
    filters = {
        "status": args.status,
        "event": args.event,
        "since": args.since,
        "until": args.until,
        "event_id": args.event_id,
        "limit": args.limit,
    }
    rows = _from_delivery_log(
        args,
        stderr,
        lambda attempts: list_logged_deliveries(attempts, args.partner, **filters),
        lambda log: list_deliveries(log, args.partner, **filters),
    )
    if rows is None:
        return 2

    dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
    for row in rows:
        stdout.write(dumps(row) + "\n")
    counts = Counter(str(row.get("status")) for row in rows)
    breakdown = ", ".join(f"{counts[s]} {s}" for s in DELIVERY_STATUSES if counts[s])
    summary = f"deliveries: {len(rows)} attempt(s) for partner {args.partner}, newest first"
    if breakdown:
        summary += f" ({breakdown})"
    if len(rows) == args.limit:
        summary += f"; limit {args.limit} reached, there may be more"
    print(summary, file=stderr)
    return 0


def run_delivery_stats(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    """`deliveries --stats`: the table on stdout, a summary line on stderr."""
    refused = [f"--{name.replace('_', '-')}" for name in ("status", "event_id", "limit") if getattr(args, name)]
    if refused:
        print(f"distiller: deliveries: {', '.join(refused)} cannot be used with --stats", file=stderr)
        return 2
    window = {"partner_id": args.partner, "event": args.event, "since": args.since, "until": args.until}
    rows = _from_delivery_log(
        args,
        stderr,
        lambda attempts: logged_stats(attempts, **window),
        lambda log: mongo_stats(log, log.database[PARTNERS_COLLECTION], **window),
    )
    if rows is None:
        return 2
    for line in stats_table(rows):
        stdout.write(line + "\n")
    attempts_total, held_total = sum(row.attempts for row in rows), sum(row.held for row in rows)
    held = f"; {held_total} held for paused partners (not attempts)" if held_total else ""
    print(f"deliveries: {attempts_total} attempt(s) across {len(rows)} partner(s){held}", file=stderr)
    return 0


__all__ = ["add_filter_arguments", "register", "run_deliveries", "run_delivery_stats", "run_redrive"]
