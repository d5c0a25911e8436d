"""`distiller` console script. `distill` is a contract other tools run against: keep its shape."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TextIO

from distiller.lookups import LookupFailure, MongoLookups
from distiller.model import ChangeEvent, RecordError
from distiller.pipeline import ChangeOutcome, distill
from distiller.sources import change_events_from_text
from distiller.world import WorldFileError, in_memory_database, load_partners, load_world

#: Lines distilled together: lookups are batched per chunk, memory stays flat on long streams.
CHUNK_LINES = 1000


def _numbered_lines(files: list[str], stdin: TextIO) -> Iterator[tuple[str, str]]:
    if not files:
        for number, line in enumerate(stdin, start=1):
            yield f"<stdin>:{number}", line
        return
    for name in files:
        with open(name, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                yield f"{name}:{number}", line


def _chunks(lines: Iterable[tuple[str, str]], size: int) -> Iterator[list[ChangeEvent | RecordError]]:
    chunk: list[ChangeEvent | RecordError] = []
    for origin, line in lines:
        if not line.strip():
            continue
        chunk.extend(change_events_from_text(line, origin))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _one_line(text: str) -> str:
    return " ".join(text.split())


def run_distill(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    try:
        partners = load_partners(Path(args.partners))
        world = load_world(Path(args.world)) if args.world else {}
    except WorldFileError as exc:
        print(f"distiller: {_one_line(str(exc))}", file=stderr)
        return 2
    lookups = MongoLookups(in_memory_database(partners, world), ttl_seconds=float("inf"))
    bad = 0
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    try:
        for chunk in _chunks(_numbered_lines(args.files, stdin), CHUNK_LINES):
            for result in distill(chunk, lookups, explain=args.explain):
                if isinstance(result, RecordError):
                    bad += 1
                    print(f"error: {_one_line(str(result))}", file=stderr)
                elif args.explain:
                    stdout.write(dumps(result.explain()) + "\n")
                else:
                    assert isinstance(result, ChangeOutcome)
                    for delivery in result.deliveries:
                        stdout.write(dumps(delivery.to_json()) + "\n")
    except OSError as exc:
        print(f"distiller: {exc.filename}: cannot read: {exc.strerror}", file=stderr)
        return 2
    except LookupFailure as exc:
        print(f"distiller: lookup failed: {_one_line(str(exc))}", file=stderr)
        return 2
    return 1 if bad else 0


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
    distill_cmd.add_argument("files", nargs="*", metavar="FILE", help="JSON Lines input (default: stdin)")
    distill_cmd.set_defaults(run=run_distill)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args, sys.stdin, sys.stdout, sys.stderr))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
