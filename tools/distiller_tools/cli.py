"""`distiller` console script. `distill` is a contract other tools run against: keep its shape."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TextIO

from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.core.ejson import compact_json
from distiller.core.lookups import LookupFailure
from distiller.core.model import ChangeEvent, RecordError
from distiller.core.pipeline import ChangeOutcome, collector_paused, distill
from distiller.ingest.sources import change_events_from_text, change_events_in_text
from distiller_tools.world import IndexedWorld, WorldFileError, in_memory_database, load_partners, load_world

#: `--retry-delays` when none is given: the stack's own schedule (seconds before each retry).
DEFAULT_RETRY_DELAYS = "60,300,900"

#: Lines distilled together: lookups are batched per chunk (in-memory here), memory stays flat.
#: 200, not 1,000: a chunk's parsed events (~2 MB, not ~10) stay in a core's L2 cache between
#: parsing and distilling, ~6 µs per event less in `make bench`.
CHUNK_LINES = 200
#: Chunks per young-generation collection (`change_chunks`): each scans the chunk the caller still
#: holds, ~3.5 µs per event when every 1,000-line chunk had one.
COLLECT_EVERY = 10


#: `distiller distill | head`: the exit status of a command whose reader went away (128 + SIGPIPE, as a shell
#: reports a tool that SIGPIPE ended).
BROKEN_PIPE_EXIT = 141


def _numbered_lines(files: list[str], stdin: TextIO) -> Iterator[tuple[str, bytes]]:
    """Each input line as bytes with its origin (`FILE:N`, `<stdin>:N`): decoding is per line, so one
    line that is not UTF-8 is one bad line and not the end of the input."""
    if not files:
        raw = getattr(stdin, "buffer", None)
        lines: Iterable[bytes] = raw if raw is not None else (x.encode("utf-8", "surrogateescape") for x in stdin)
        for number, line in enumerate(lines, start=1):
            yield f"<stdin>:{number}", line
        return
    for name in files:
        with open(name, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                yield f"{name}:{number}", line


def _decoded_lines(lines: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, str | RecordError]]:
    """Each line as text, or the `RecordError` `distill` reports for a line that is not UTF-8."""
    for origin, line in lines:
        try:
            yield origin, line.decode("utf-8")
        except UnicodeDecodeError:
            yield origin, next(x for x in change_events_from_text(line, origin) if isinstance(x, RecordError))


def change_chunks(lines: Iterable[tuple[str, str | bytes]], size: int) -> Iterator[list[ChangeEvent | RecordError]]:
    """Parsed change events, `size` at a time, parsed (and distilled by the caller) with the cyclic
    collector paused (`collector_paused`); every `COLLECT_EVERY` chunks one young-generation
    collection frees whatever cycles those chunks left."""
    with collector_paused() as collecting:
        chunk: list[ChangeEvent | RecordError] = []
        handed_out = 0
        for origin, line in lines:
            if not line or line.isspace():  # `not line.strip()`, without copying the line
                continue
            # Documents decoded field by field when read (docs/assumptions.md, "Lazy Extended JSON").
            chunk.extend(change_events_in_text(line, origin, lazy=True))
            if len(chunk) >= size:
                yield chunk
                chunk = []
                handed_out += 1
                if collecting and handed_out % COLLECT_EVERY == 0:
                    gc.collect(1)
        if chunk:
            yield chunk


def dry_run_file_links(bucket: str | None, prefix: str) -> FileLinks | None:
    """Signed links for a dry run: real presigning (no request is made), with this machine's AWS
    credentials when it has some and placeholder ones otherwise. No bucket: files named only."""
    if not bucket:
        return None
    import boto3
    from botocore.config import Config

    session = boto3.Session()
    if session.get_credentials() is None:
        session = boto3.Session(aws_access_key_id="dry-run", aws_secret_access_key="dry-run")  # noqa: S106
    client = session.client(
        "s3", region_name=session.region_name or "us-east-2", config=Config(signature_version="s3v4")
    )
    return FileLinks(client, bucket, prefix)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_distill(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    try:
        partners = load_partners(Path(args.partners))
        world = load_world(Path(args.world)) if args.world else {}
    except WorldFileError as exc:
        print(f"distiller: {_one_line(str(exc))}", file=stderr)
        return 2
    lookups = MongoLookups(IndexedWorld(in_memory_database(partners, world)), ttl_seconds=float("inf"))
    file_links = dry_run_file_links(args.documents_bucket, args.documents_prefix)
    bad = 0
    dumps = compact_json  # json.JSONEncoder's compact bytes, at orjson's speed
    try:
        for chunk in change_chunks(_numbered_lines(args.files, stdin), CHUNK_LINES):
            for result in distill(chunk, lookups, explain=args.explain, file_links=file_links):
                if isinstance(result, RecordError):
                    bad += 1
                    print(f"error: {_one_line(str(result))}", file=stderr)
                elif args.explain:
                    stdout.write(dumps(result.explain()) + "\n")
                    if result.error is not None:
                        bad += 1
                        print(f"error: {_one_line(str(result.error))}", file=stderr)
                else:
                    assert isinstance(result, ChangeOutcome)
                    for delivery in result.deliveries:
                        stdout.write(dumps(delivery.to_json()) + "\n")
    except BrokenPipeError:
        raise  # the reader went away (`| head`): `main` ends quietly
    except OSError as exc:
        print(f"distiller: {exc.filename}: cannot read: {exc.strerror}", file=stderr)
        return 2
    except LookupFailure as exc:
        print(f"distiller: lookup failed: {_one_line(str(exc))}", file=stderr)
        return 2
    return 1 if bad else 0


def run_pipeline(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    from distiller.deliver.dispatch import RetrySchedule
    from distiller_tools.local.pipeline import LocalPipeline, failure_lines

    try:
        RetrySchedule.parse(args.retry_delays)
        partners = load_partners(Path(args.partners))
        world = load_world(Path(args.world)) if args.world else {}
    except (WorldFileError, ValueError) as exc:
        print(f"distiller: {_one_line(str(exc))}", file=stderr)
        return 2
    try:
        decoded = list(_decoded_lines(_numbered_lines(args.files, stdin)))
    except OSError as exc:
        print(f"distiller: {exc.filename}: cannot read: {exc.strerror}", file=stderr)
        return 2
    # A line that is not text cannot be an SQS message body: reported like `distill` does, never queued.
    undecodable = [line for _, line in decoded if isinstance(line, RecordError)]
    for error in undecodable:
        print(f"error: {_one_line(str(error))}", file=stderr)
    lines = [line.rstrip("\r\n") for _, line in decoded if isinstance(line, str)]

    pipeline = LocalPipeline(
        in_memory_database(partners, world),
        partners,
        retry_delays=args.retry_delays,
        allow_private_endpoints=args.allow_private_endpoints,
        log_stream=stderr,
        progress=None if args.quiet else stderr,
    )
    try:
        started = time.perf_counter()
        report = pipeline.run(lines)
        elapsed = time.perf_counter() - started
        dead_letters = pipeline.dead_letters()
    finally:
        pipeline.close()

    if args.log:
        with open(args.log, "w", encoding="utf-8") as handle:
            for attempt in report.attempts:
                handle.write(json.dumps(attempt, default=str) + "\n")
    print(report.table(), file=stdout)
    delivered = sum(1 for attempt in report.attempts if attempt["status"] == "delivered")
    print(throughput_line(delivered, report.input_lines, elapsed), file=stderr)
    for line in failure_lines(report.parked, dead_letters):
        print(line, file=stderr)
    return 1 if report.parked or dead_letters or undecodable else 0


def throughput_line(deliveries: int, events: int, seconds: float) -> str:
    """`distiller run`'s throughput, on stderr after the table (stdout stays the table alone):
    deliveries made and input events (lines queued) per second of the run, from queuing the input
    to every queue empty, retry delays included."""
    seconds = max(seconds, 1e-9)
    return (
        f"distiller run: {deliveries} deliveries, {events} events in {seconds:.1f}s: "
        f"{deliveries / seconds:.1f} deliveries/s, {events / seconds:.1f} events/s"
    )


def run_receiver(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    from distiller_tools.local.receiver import SecretSourceError, resolve_secret, serve

    try:
        secret = resolve_secret(args.secret, args.secret_file)
    except SecretSourceError as exc:  # the message names the source, never the secret
        print(f"distiller: {_one_line(str(exc))}", file=stderr)
        return 2
    return serve(args.port, secret, args.fail_first, stdout, stderr, max_age=args.max_age)


def run_api(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    from distiller.deliver.dispatch import RetrySchedule
    from distiller_tools.local.api_server import DeliverySettings, load_deliveries, start
    from distiller_tools.local.receiver import HOST, listen_failure, serve_until_interrupted

    delivery_only = [
        flag
        for flag, given in (
            ("--retry-delays", args.retry_delays is not None),
            ("--log", args.log is not None),
        )
        if given
    ]
    if delivery_only and not args.deliver:
        print(f"distiller: {', '.join(delivery_only)}: only with --deliver", file=stderr)
        return 2
    retry_delays = args.retry_delays if args.retry_delays is not None else DEFAULT_RETRY_DELAYS
    try:
        RetrySchedule.parse(retry_delays)
        partners = load_partners(Path(args.partners))
        world = load_world(Path(args.world)) if args.world else {}
        database = in_memory_database(partners, world)
        loaded = load_deliveries(database, Path(args.deliveries)) if args.deliveries else 0
        for path in (args.log, args.changes):
            if path is not None:  # appended to while serving: refuse one that cannot be written now
                open(path, "a", encoding="utf-8").close()
    except (WorldFileError, ValueError) as exc:
        print(f"distiller: {_one_line(str(exc))}", file=stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: cannot open: {exc.strerror}" if exc.filename else _one_line(str(exc))
        print(f"distiller: {where}", file=stderr)
        return 2
    delivery = (
        DeliverySettings(
            retry_delays=retry_delays,
            allow_private_endpoints=args.allow_private_endpoints,
            log=Path(args.log) if args.log else None,
        )
        if args.deliver
        else None
    )
    with open(args.changes, "a", encoding="utf-8") if args.changes else contextlib.nullcontext() as changes:
        try:
            server = start(
                args.port,
                database,
                partners,
                stderr,
                changes_out=changes,
                delivery=delivery,
                report_out=stderr,
                allow_private_endpoints=args.allow_private_endpoints,
            )
        except OSError as exc:  # the port is taken, or not ours to take
            print(f"distiller: {listen_failure(HOST, args.port, exc)}", file=stderr)
            return 2
        print(f"api listening on {server.url} ({loaded} delivery attempts loaded)", file=stderr, flush=True)
        if changes is not None:
            print(f"api: appending the change events of its writes to {args.changes}", file=stderr, flush=True)
        if delivery is not None:
            print(
                "api: delivering its writes through the local pipeline to the partners' webhook URLs "
                f"(retry delays {retry_delays})",
                file=stderr,
                flush=True,
            )
        return serve_until_interrupted(server)


def _port(text: str) -> int:
    """A TCP port for `--port`: 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distiller", description="PrivateAuto trigger distiller")
    commands = parser.add_subparsers(dest="command", required=True)

    distill_cmd = commands.add_parser(
        "distill",
        help="dry run: change events (JSON Lines) in, partner deliveries (JSON Lines) out",
        description="Read change events as JSON Lines (files, or stdin) and print one JSON line per "
        "partner delivery: {partnerId, event, eventId, eventKey, payload}.",
    )
    distill_cmd.add_argument("--partners", required=True, metavar="PARTNERS.json", help="JSON array of partner records")
    distill_cmd.add_argument("--world", metavar="WORLD.json", help="{collectionName: [documents]} used for lookups")
    distill_cmd.add_argument(
        "--explain",
        action="store_true",
        help="print, per change event, the events produced and why each partner was or was not routed",
    )
    distill_cmd.add_argument(
        "--documents-bucket",
        default=os.environ.get("DOCUMENTS_BUCKET"),
        metavar="BUCKET",
        help="sign documents[] links for this S3 bucket (default: $DOCUMENTS_BUCKET; none: files named only)",
    )
    distill_cmd.add_argument(
        "--documents-prefix",
        default=os.environ.get("DOCUMENTS_KEY_PREFIX", ""),
        metavar="PREFIX",
        help="key prefix of stored documents (default: $DOCUMENTS_KEY_PREFIX)",
    )
    distill_cmd.add_argument("files", nargs="*", metavar="FILE", help="JSON Lines input (default: stdin)")
    distill_cmd.set_defaults(run=run_distill)

    run_cmd = commands.add_parser(
        "run",
        help="the whole pipeline locally: embedded AWS endpoint, real handlers, real HTTP to partners",
        description="Run change events (JSON Lines) through the ingest queue, the Distiller and Dispatcher "
        "handlers and signed HTTP deliveries, against an embedded AWS endpoint on 127.0.0.1. Ends when every "
        "delivery is delivered or dead-lettered; prints a summary per partner and event.",
    )
    run_cmd.add_argument("--partners", required=True, metavar="PARTNERS.json", help="JSON array of partner records")
    run_cmd.add_argument("--world", metavar="WORLD.json", help="{collectionName: [documents]} used for lookups")
    run_cmd.add_argument(
        "--retry-delays",
        default=DEFAULT_RETRY_DELAYS,
        metavar="S,S,S",
        help=f"seconds before each retry (default {DEFAULT_RETRY_DELAYS})",
    )
    run_cmd.add_argument(
        "--allow-private-endpoints",
        action="store_true",
        help="local development only: allow http:// and private/loopback partner URLs",
    )
    run_cmd.add_argument("--log", metavar="FILE", help="write one JSON line per delivery attempt")
    run_cmd.add_argument(
        "--quiet", action="store_true", help="no progress on stderr (errors, dead letters and the summary still print)"
    )
    run_cmd.add_argument("files", nargs="*", metavar="FILE", help="JSON Lines input (default: stdin)")
    run_cmd.set_defaults(run=run_pipeline)

    from distiller_tools.local.receiver import SECRET_ENV, max_age_seconds

    receiver_cmd = commands.add_parser(
        "receiver",
        help="a partner endpoint on 127.0.0.1 that verifies signatures and prints what it accepts",
        description="A partner endpoint on 127.0.0.1: verifies X-PA-Signature (401 otherwise), dedupes on the "
        "signed body's eventId, refuses (400) X-PA-Event-Id / X-PA-Event / X-PA-Partner headers that contradict "
        "the signed body, and prints one JSON line per accepted delivery. The webhook secret comes from exactly "
        f"one of --secret-file, ${SECRET_ENV} or --secret.",
    )
    receiver_cmd.add_argument("--port", type=_port, required=True, help="port on 127.0.0.1 (0: any free port)")
    receiver_cmd.add_argument(
        "--secret", help=f"the partner's webhook secret (visible in `ps`: prefer --secret-file or ${SECRET_ENV})"
    )
    receiver_cmd.add_argument(
        "--secret-file", metavar="PATH", help="read the webhook secret from this file (one trailing newline dropped)"
    )
    receiver_cmd.add_argument(
        "--fail-first", type=int, default=0, metavar="N", help="answer 503 to the first N tries of each event"
    )
    receiver_cmd.add_argument(
        "--max-age",
        type=max_age_seconds,
        metavar="SECONDS",
        help="refuse (401) a delivery whose signed X-PA-Timestamp is older than this (default: off). "
        "X-PA-Timestamp is the emission time and stays the same on every retry (1, 5, 15 min: about 21 min "
        "in all), so a window shorter than that refuses legitimate retries",
    )
    receiver_cmd.set_defaults(run=run_receiver)

    api_cmd = commands.add_parser(
        "api",
        help="the partner API on 127.0.0.1 through the same handler (JWT with each partner's sharedSecret)",
        description="Serve the partner API on 127.0.0.1 through the Lambda handler, over an in-memory database "
        "(PARTNERS.json, WORLD.json). The API's writes (POST /sell, POST /leads) change that database: --changes "
        "records them as change-stream events, and --deliver puts them through the same local pipeline as "
        "`distiller run`, so a POST /sell reaches the partner's webhook URL as signed listing.created and "
        "offer.created deliveries.",
    )
    api_cmd.add_argument("--port", type=_port, required=True, help="port on 127.0.0.1 (0: any free port)")
    api_cmd.add_argument("--partners", required=True, metavar="PARTNERS.json", help="records with sharedSecret")
    api_cmd.add_argument("--world", metavar="WORLD.json", help="{collectionName: [documents]}")
    api_cmd.add_argument("--deliveries", metavar="LOG.jsonl", help="delivery attempts (`distiller run --log`)")
    api_cmd.add_argument(
        "--deliver",
        action="store_true",
        help="put the change events of the API's writes through the local pipeline (embedded AWS endpoint, the "
        "Distiller and Dispatcher handlers) to the partners' webhook URLs; its report goes to stderr",
    )
    api_cmd.add_argument(
        "--allow-private-endpoints",
        action="store_true",
        help="local development only: with --deliver, allow http:// and private/loopback partner URLs (a "
        "`distiller receiver` on 127.0.0.1); and let GET /sell redirect to an http:// redirectUrl",
    )
    api_cmd.add_argument(
        "--retry-delays",
        metavar="S,S,S",
        help=f"with --deliver: seconds before each retry (default {DEFAULT_RETRY_DELAYS}); "
        "a retry waiting holds back the deliveries of later writes until it settles",
    )
    api_cmd.add_argument(
        "--log", metavar="FILE", help="with --deliver: append one JSON line per delivery attempt (as `run --log`)"
    )
    api_cmd.add_argument(
        "--changes",
        metavar="FILE",
        help="append every change event the API's writes make, one JSON line each, as the relay sends them: "
        "`distiller distill --partners P FILE` or `distiller run` replays them",
    )
    api_cmd.set_defaults(run=run_api)

    from distiller_tools import ops, partners, relay_cli

    relay_cli.register(commands)
    ops.register(commands)
    partners.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args, sys.stdin, sys.stdout, sys.stderr))
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_EXIT


def _discard_stdout() -> None:
    """After the reader of stdout went away: send what is still buffered to /dev/null, so the flush at
    exit does not fail again (the `BrokenPipeError` recipe of Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real stream (tests), or already closed
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
