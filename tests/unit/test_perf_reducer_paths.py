"""The reducer plan's path filter (`RowPlan.rows_for_paths`) only skips rows that cannot fire: every
reducer emits exactly what it emits when every row on a written top-level field is tried."""

import itertools
import random
from typing import Any

import pytest

from distiller.core.model import ChangeEvent
from distiller.core.reducers import REDUCERS
from distiller.core.reducers.rules import Reducer, needed_paths
from distiller.core.transitions import Transitions

VALUES: list[Any] = [True, False, None, "joined", "readyToClose", "sold", "pending", "complete", 0, 12400, "x"]
VALUES += [[{"signedAt": "2026-04-01"}], [{"signedAt": None}, {"signedAt": "t"}], [], [{"key": "a.pdf"}], {"a": 1}]


def every_row_tried(reducer: Reducer, t: Transitions) -> list[tuple[str, dict[str, Any]]]:
    """`Reducer.emissions` as it was before the path filter: every row on a written top-level field."""
    first_only = reducer.one_event_per_update and not t.is_insert
    fired: list[tuple[str, dict[str, Any]]] = []
    for index in reducer.plan.rows_for(t.written_tops()):
        r = reducer.rows[index]
        details = r.emissions(t)
        if details:
            fired += [(r.event, detail) for detail in details]
            if first_only:
                break
    return fired


def candidate_paths(reducer: Reducer) -> list[str]:
    """Every path a row reads, its parents, children, array slots and a sibling."""
    paths: set[str] = {"updatedAt", "other"}
    for r in reducer.rows:
        for path in needed_paths(r) or ():
            parts = path.split(".")
            paths.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            paths.update({f"{path}.0", f"{path}.1.signedAt", f"{path}.child", f"{parts[0]}.sibling"})
    return sorted(paths)


def updates(reducer: Reducer, count: int) -> list[ChangeEvent]:
    rng = random.Random(reducer.collection)
    paths = candidate_paths(reducer)
    values = VALUES + [getattr(t, "value", None) for r in reducer.rows for t in r.triggers]
    changes = []
    for n in range(count):
        written = rng.sample(paths, k=min(len(paths), rng.randint(1, 3)))
        removed = tuple(rng.sample(paths, k=rng.randint(0, 1)))
        updated = {path: rng.choice(values) for path in written}
        row_paths = [path for r in reducer.rows for path in needed_paths(r) or ()]
        if row_paths and n % 3:  # a parent written whole, holding the row's field
            parts = rng.choice(row_paths).split(".")
            cut = rng.randint(1, len(parts))
            nested: Any = rng.choice(values)
            for part in reversed(parts[cut:]):
                nested = {part: nested}
            updated[".".join(parts[:cut])] = nested
        document = {path.split(".")[0]: rng.choice(values) for path in paths}
        before = {path.split(".")[0]: rng.choice(values) for path in paths} if n % 2 else None
        changes.append(
            ChangeEvent(
                f"t{n}", "update", reducer.collection, "id", document, before, updated, removed, origin=f"change {n}"
            )
        )
    return changes


@pytest.mark.parametrize("collection", sorted({r.collection for r in REDUCERS.values()}))
def test_the_path_filter_skips_only_rows_that_cannot_fire(collection):
    reducer = REDUCERS[collection]
    fired_somewhere = 0
    for change in updates(reducer, 400):
        t = Transitions(change, change.full_document)
        try:
            expected = every_row_tried(reducer, t)
        except Exception:  # a shape a rule cannot read: the filter must not hide that either
            with pytest.raises(Exception):  # noqa: B017
                reducer.emissions(Transitions(change, change.full_document))
            continue
        assert [(r.event, detail) for r, detail in reducer.emissions(t)] == expected, change
        fired_somewhere += bool(expected)
    if any(needed_paths(r) for r in reducer.rows):
        assert fired_somewhere  # the generated updates do reach the rows on paths


def test_a_write_beside_a_rows_path_skips_the_row_and_one_on_it_does_not():
    deals = REDUCERS["deals"]
    plan = deals.plan
    names = [deals.rows[i].event for i in plan.rows_for_paths(("dealState.buyer.status",))]

    assert "deal.buyer_joined" in names and "deal.buyer_ready" in names
    assert "deal.seller_joined" not in names and "deal.docs_submitted" not in names
    whole = [deals.rows[i].event for i in plan.rows_for_paths(("dealState",))]
    assert {"deal.seller_joined", "deal.docs_submitted"} <= set(whole)


def test_rows_any_write_may_fire_are_never_skipped():
    for reducer in {id(r): r for r in REDUCERS.values()}.values():
        for index, r in enumerate(reducer.rows):
            if needed_paths(r) is None and r.watches is None:
                for written in itertools.islice(itertools.permutations(candidate_paths(reducer), 1), 5):
                    assert index in reducer.plan.rows_for_paths(written)
