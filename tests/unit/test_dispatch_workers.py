"""The dispatcher's worker pool: per-partner lanes, a bound per partner, threads kept across batches."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from distiller.deliver.workers import DispatchWorkers, lanes

WAIT = 10.0
"""Seconds a test waits for something that happens at once when the code is right."""


@pytest.fixture
def workers():
    pool = DispatchWorkers(max_workers=4)
    yield pool
    pool.close()


def test_lanes_give_every_partner_its_first_lane_before_any_partner_its_second():
    # Given three partners with 3, 1 and 2 deliveries, at most 2 at once each
    keys = ["acme", "acme", "lendco", "acme", "bayside", "bayside"]

    # When the lanes are laid out
    queues = lanes(keys, per_key=2)

    # Then acme and bayside get two lanes (sharing one queue each), lendco one, first lanes first
    firsts = [list(q) for q in queues[:3]]
    assert firsts == [[0, 1, 3], [2], [4, 5]]
    assert queues[3] is queues[0] and queues[4] is queues[2] and len(queues) == 5


def test_every_job_runs_once_and_results_come_back_by_index(workers):
    keys = [f"partner-{n % 3}" for n in range(20)]

    results = workers.run(lambda index: index * 10, keys, per_key=2)

    assert results == [index * 10 for index in range(20)]


def test_one_partner_never_has_more_than_per_key_jobs_at_once(workers):
    # Given one partner's 6 jobs, at most 3 at once, on 4 workers
    lock = threading.Lock()
    running = Counter[str]()
    peak = Counter[str]()
    together = threading.Barrier(3, timeout=WAIT)  # passes only if 3 of them run at the same time

    def job(index: int) -> int:
        with lock:
            running["acme"] += 1
            peak["acme"] = max(peak["acme"], running["acme"])
        if index < 3:
            together.wait()
        with lock:
            running["acme"] -= 1
        return index

    # When they run
    workers.run(job, ["acme"] * 6, per_key=3)

    # Then 3 ran together and never a 4th, although a worker was free
    assert peak["acme"] == 3


def test_a_hanging_partner_holds_only_its_own_lanes(workers):
    # Given 4 workers, 2 lanes per partner, and a partner whose jobs hang until the others are done
    others_done = threading.Event()
    finished: list[str] = []
    released_by_others: list[bool] = []
    keys = ["slow"] * 8 + ["fast"] * 8

    def job(index: int) -> None:
        if keys[index] == "slow":
            released_by_others.append(others_done.wait(WAIT))
            return
        finished.append(keys[index])
        if len(finished) == 8:
            others_done.set()

    # When they run (before lanes, the slow partner's queued jobs took every worker while waiting)
    workers.run(job, keys, per_key=2)

    # Then the other partner's jobs all finished while the slow ones were still hanging
    assert finished == ["fast"] * 8
    assert released_by_others == [True] * 8


def test_the_threads_are_kept_across_batches(workers):
    seen: set[int] = set()

    def job(index: int) -> None:
        seen.add(threading.get_ident())

    for _ in range(5):
        workers.run(job, [f"p{n % 4}" for n in range(16)], per_key=4)

    assert threading.get_ident() not in seen
    assert 1 <= len(seen) <= workers.max_workers  # five batches, never more threads than workers


def test_a_crash_in_one_lane_is_raised_after_every_other_lane_finished(workers):
    class Crash(BaseException):
        pass

    done: list[int] = []

    def job(index: int) -> int:
        if index == 0:
            raise Crash("the process is gone")
        done.append(index)
        return index

    with pytest.raises(Crash):
        workers.run(job, ["acme", "lendco", "bayside", "lendco"], per_key=1)

    assert sorted(done) == [1, 2, 3]


def test_a_single_job_runs_on_the_callers_thread_and_the_pool_is_never_started():
    pool = DispatchWorkers(max_workers=4)

    assert pool.run(lambda index: threading.get_ident(), ["acme"], per_key=4) == [threading.get_ident()]
    assert pool._pool is None
