"""The worker's garbage collector: young objects collected every 20,000 allocations, and the
start-up heap frozen once the worker is ready, both said in its log."""

from __future__ import annotations

import re

from tests.instance import Instance
from tests.support import wait_for

HEAP = re.compile(r"heap: (\d+) start-up objects frozen, young ones collected every (\d+) alloc")


def test_a_ready_worker_has_frozen_its_start_up_heap(instance: Instance) -> None:
    """Once ready, the worker has frozen its start-up objects and collects young ones rarely."""
    wait_for(lambda: HEAP.search(instance.log()) is not None, timeout=30)
    match = HEAP.search(instance.log())
    assert match is not None
    frozen, young = int(match[1]), int(match[2])
    assert frozen > 10_000  # modules, settings, clients: far more than a handful
    assert young == 20_000  # CPython's default is 700
