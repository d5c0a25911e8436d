"""docs/event-catalog.md is generated from the reducer tables and covers the spec's catalog."""

import re
from pathlib import Path

import pytest

from distiller.core.reducers import TABLES, all_events
from distiller_tools.catalog import render

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "spec" / "partner-api.txt"


def test_catalog_file_is_up_to_date():
    assert (ROOT / "docs" / "event-catalog.md").read_text() == render(), "run `make catalog`"


def test_every_spec_catalog_event_is_implemented_or_planned():
    if not SPEC.exists():
        pytest.skip(f"spec not found at {SPEC}")
    text = SPEC.read_text()
    spec_events = set(re.findall(r"^((?:deal|offer|listing|user|document)\.[a-z_]+) \|$", text, re.M))
    assert len(spec_events) >= 34
    # the events the sequences and the negative-equity table add to the catalog tables
    spec_events |= {"document.signature_added", "document.completed", "deal.negative_equity_reported"}
    assert all(event in text for event in spec_events)
    # Every spec event is produced: nothing is left planned.
    assert spec_events - set(all_events()) == set()


@pytest.mark.parametrize("reducer", TABLES, ids=lambda r: r.collection)
def test_every_row_has_a_test_case_named_after_its_event(reducer):
    files = sorted((ROOT / "tests" / "unit").glob(f"test_reducer_{reducer.collection}*.py"))
    text = "".join(f.read_text() for f in files)
    for r in reducer.rows:
        assert f'id="{r.event}"' in text, f"test_reducer_{reducer.collection}*.py has no case with id={r.event!r}"
