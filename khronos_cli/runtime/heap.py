"""The worker's garbage collector, set for a server's heap rather than a script's.

- **Young objects are collected every 20,000 net allocations**, not CPython's 700. An update in
  flight holds a few hundred containers for a few milliseconds; at 700 the collector ran about
  150 times a second in the bot's pipeline, promoted what was in flight to the older
  generations, and so ran a full collection (55 ms each) every second or so: a tenth of the
  worker's CPU (``benchmarks/pipeline.py``). Reference counting still frees almost everything
  at once; the collector only looks for cycles, now a few times a second.
- **The start-up heap is frozen** (``gc.freeze``, after one full collection): the modules,
  settings, clients, breakers and limiters built at start are never scanned again.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG", "freeze", "tune"]

YOUNG = 20_000  # net allocations of container objects between two young collections


def tune() -> None:
    """Collect young objects every :data:`YOUNG` allocations (the older generations as often,
    relative to them, as CPython's own ratios have it twice over)."""
    gc.set_threshold(YOUNG, 20, 20)


def freeze() -> tuple[int, int]:
    """Collect once, then leave every object alive now out of later collections. Returns how
    many objects are frozen and how many allocations a young collection now waits for."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count(), gc.get_threshold()[0]
