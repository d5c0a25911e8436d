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
