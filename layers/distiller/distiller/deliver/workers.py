"""The dispatcher's worker threads: one pool per Dispatcher, kept across batches and warm invocations.

Deliveries are I/O-bound (a POST, a few delivery-log round trips, a queue send), and the delivery
log and queues are synchronous clients, so threads with pooled keep-alive connections carry them.
Starting a fresh pool per batch cost a thread start per worker per invocation; this pool starts
its threads once, on first use, and only as many as are ever needed at once.

A batch runs as lanes: each partner's deliveries form one queue, worked by at most `per_key`
threads at a time (the sender's per-host connection count). A partner's waiting deliveries
therefore wait in its queue, never in a worker blocked on that host's connection slots, so a slow
or hanging partner holds at most its own lanes and every other partner keeps its threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

R = TypeVar("R")


def lanes(keys: Sequence[str], per_key: int) -> list[deque[int]]:
    """The queues the workers drain, in start order: each key's indices (in input order) shared
    by up to `per_key` lanes, the first lane of every key before the second of any."""
    if per_key < 1:
        raise ValueError(f"per_key must be >= 1, got {per_key}")
    by_key: dict[str, deque[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, deque()).append(index)
    queues = list(by_key.values())
    return [q for depth in range(per_key) for q in queues if depth < len(q)]


class DispatchWorkers:
    """At most `max_workers` jobs at once, for every batch this process runs (concurrent callers
    share the bound: it is the instance's, not the call's)."""

    def __init__(self, max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, job: Callable[[int], R], keys: Sequence[str], per_key: int) -> list[R]:
        """`job(i)` for every index of `keys`, at most `per_key` at once per key; results by index."""
        results: list[R | None] = [None] * len(keys)
        done = [False] * len(keys)

        def drain(queue: deque[int]) -> None:
            while True:
                try:
                    index = queue.popleft()  # atomic: two lanes of one key never take the same index
                except IndexError:
                    return
                results[index] = job(index)
                done[index] = True

        runners = lanes(keys, per_key)
        if len(runners) == 1:  # nothing to overlap with: no hand-off to another thread
            drain(runners[0])
        else:
            pool = self._executor()
            futures = [pool.submit(drain, queue) for queue in runners]
            wait(futures)  # every lane ends before anything is raised: nothing outlives the batch
            for future in futures:
                future.result()
        assert all(done)  # every index was taken by exactly one lane
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the threads once they finish what they hold; the next `run` starts a new pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="dispatch")
            return self._pool
