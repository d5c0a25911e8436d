"""The optimised distill path delivers, byte for byte, what the eager reference path delivers.

Optimised: `change_events_from_text(lazy=True)` (orjson, Extended JSON decoded when read) and
`ejson.compact_json`. Reference: `ejson.loads` decoding every wrapper up front and the stdlib
encoder. Both run the same `distill` over the bench's generated stream and world.
"""

import json
import re

import pytest

from bench.distill_bench import Generator
from distiller.adapters.lookups import MongoLookups
from distiller.core.ejson import compact_json
from distiller.core.model import RecordError
from distiller.core.pipeline import distill
from distiller.ingest.sources import change_events_from_text
from distiller_tools.world import IndexedWorld, in_memory_database

STDLIB = json.JSONEncoder(separators=(",", ":")).encode

#: Amounts and prices re-spelled as other numeric wrappers, so transitions and payloads read them.
_NUMBER = re.compile(r'"(amount|price)":(\d+)')
_SPELLINGS = (
    lambda n: f'{{"$numberLong":"{n}"}}',
    lambda n: f'{{"$numberInt":"{n}"}}',
    lambda n: f'{{"$numberDecimal":"{n}.00"}}',
    lambda n: f'{{"$numberDouble":"{n}.5"}}',
    lambda n: n,
)


def respelled(line: str, index: int) -> str:
    if '"$' not in line:
        return line  # plain JSON lines carry no wrappers; keep them plain
    spell = _SPELLINGS[index % len(_SPELLINGS)]
    return _NUMBER.sub(lambda m: f'"{m.group(1)}":{spell(m.group(2))}', line)


def output(lines: list[tuple[str, str]], database, *, lazy: bool) -> list[str]:
    lookups = MongoLookups(database, ttl_seconds=float("inf"))
    encode = compact_json if lazy else STDLIB
    items = [item for origin, line in lines for item in change_events_from_text(line, origin, lazy=lazy)]
    written = []
    for start in range(0, len(items), 250):  # chunks, as `distiller distill` distills them
        for result in distill(items[start : start + 250], lookups):
            if isinstance(result, RecordError):
                written.append(f"error: {result}")
            else:
                written.extend(encode(delivery.to_json()) for delivery in result.deliveries)
    return written


@pytest.mark.parametrize("seed", [1, 20260421])
def test_lazy_path_delivers_exactly_what_the_eager_path_delivers(seed):
    stream = Generator(seed).stream(600)
    database = IndexedWorld(in_memory_database(stream.partners, stream.world))
    lines = [(origin, respelled(line, n)) for n, (origin, line) in enumerate(stream.lines)]

    optimised = output(lines, database, lazy=True)
    reference = output(lines, database, lazy=False)

    assert len(optimised) > 500, "the stream must produce deliveries to compare"
    assert optimised == reference
