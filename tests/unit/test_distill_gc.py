"""`distill` pauses the cyclic garbage collector for one batch and always restores it as it was."""

import gc

import pytest

from distiller.core.model import ChangeEvent
from distiller.core.pipeline import ChangeOutcome, distill


class _Lookups:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.collector_enabled_during: list[bool] = []

    def partners(self):
        return []

    def documents(self, collection, ids):
        self.collector_enabled_during.append(gc.isenabled())
        if self.fail:
            raise RuntimeError("database unreachable")
        return {}


UPDATE_WITHOUT_IMAGE = ChangeEvent("82AA01", "update", "deals", "64a1f2e3b5c8d90012345678", updated_fields={"a": 1})


@pytest.fixture
def collector_state():
    was = gc.isenabled()
    yield
    gc.enable() if was else gc.disable()


def test_the_collector_is_paused_during_a_batch_and_enabled_after(collector_state):
    gc.enable()
    lookups = _Lookups()

    [result] = distill([UPDATE_WITHOUT_IMAGE], lookups)

    assert lookups.collector_enabled_during == [False]
    assert gc.isenabled()
    assert not isinstance(result, ChangeOutcome)  # the document was not found: a record error


def test_a_collector_disabled_by_the_caller_stays_disabled(collector_state):
    gc.disable()

    distill([UPDATE_WITHOUT_IMAGE], _Lookups())

    assert not gc.isenabled()


def test_the_collector_is_restored_when_the_batch_raises(collector_state):
    gc.enable()

    with pytest.raises(RuntimeError, match="database unreachable"):
        distill([UPDATE_WITHOUT_IMAGE], _Lookups(fail=True))

    assert gc.isenabled()


RAW_CHANGE = (
    '{"_id":{"_data":"82AA0%d"},"operationType":"insert","ns":{"db":"privateauto","coll":"users"},'
    '"documentKey":{"_id":{"$oid":"64a1f2e3b5c8d9001234567%d"}},'
    '"fullDocument":{"_id":{"$oid":"64a1f2e3b5c8d9001234567%d"},"appRegisteredFrom":"acme"}}'
)


def test_the_cli_parses_and_hands_out_each_chunk_with_the_collector_paused(collector_state):
    """`distiller distill` (and the bench) hold the pause over a chunk's parsing and its distilling."""
    from distiller_tools.cli import change_chunks

    gc.enable()
    lines = [(f"in:{n}", RAW_CHANGE % (n, n, n)) for n in range(5)]
    seen = []
    chunks = change_chunks(lines, 2)
    for chunk in chunks:
        seen.append((len(chunk), gc.isenabled()))
    assert seen == [(2, False), (2, False), (1, False)]
    assert all(isinstance(event, ChangeEvent) for chunk in change_chunks(lines, 2) for event in chunk)
    assert gc.isenabled()


def test_a_cli_run_stopped_early_restores_the_collector(collector_state):
    from distiller_tools.cli import change_chunks

    gc.enable()
    chunks = change_chunks([("in:1", RAW_CHANGE % (1, 1, 1))] * 3, 1)
    next(chunks)
    assert not gc.isenabled()
    chunks.close()  # the reader went away (`| head`)
    assert gc.isenabled()
