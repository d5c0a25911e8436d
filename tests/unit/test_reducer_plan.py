"""The compiled row plan visits exactly the rows the table's watched fields allow, in table order."""

import itertools
import random

import pytest

from distiller.core.reducers import TABLES


@pytest.mark.parametrize("reducer", TABLES, ids=lambda r: r.collection)
def test_plan_visits_the_rows_whose_watched_fields_were_written(reducer):
    fields = sorted({name for r in reducer.rows for name in r.watches or ()} | {"updatedAt", "__v"})
    rng = random.Random(reducer.collection)
    written_sets = [set(), *({f} for f in fields)]
    written_sets += [set(rng.sample(fields, k)) for k in range(2, len(fields)) for _ in range(5)]

    for written in written_sets:
        expected = [i for i, r in enumerate(reducer.rows) if r.watches is None or not written.isdisjoint(r.watches)]
        assert reducer.plan.rows_for(written) == expected, written


def test_every_row_is_reachable_through_the_plan():
    for reducer in TABLES:
        reachable = set(reducer.plan.any_write) | set(itertools.chain(*reducer.plan.by_field.values()))
        assert reachable == set(range(len(reducer.rows))), reducer.collection
