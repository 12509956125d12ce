"""Rate limiters, one concept per module.

* :mod:`.limiter` — :class:`Limiter`: the public API (``schedule``, ``room``, ``halt``, ``stop``),
  admission and execution.
* :mod:`.scheduler` — the ready and timer heaps, the global limits and the dispatcher.
* :mod:`.keys` — one group per key, made on demand and evicted when idle.
* :mod:`.jobs` — jobs, key groups and the jobs handed back at a stop.
* :mod:`.backends` — the atomic rate decision: pyrate-limiter in memory, or one Redis script.
* :mod:`.stats` — counts, events and the rate of starts.
* :mod:`.registry` — the seed's limiters built from the settings, and Telegram's 429 rules.

A new limiter is a ``[limiters.<name>]`` table in the config (see ``config.py``) and a
``schedule`` call (or a guard in ``runtime/wiring.py``) where its dependency is called.
"""

from khronos_cli.resilience.limiter.jobs import PRIORITY_DEFAULT, QueuedJob
from khronos_cli.resilience.limiter.limiter import Limiter
from khronos_cli.resilience.limiter.registry import PRIORITY_BULK, PRIORITY_REPLY, Limiters
from khronos_cli.resilience.limiter.stats import LimiterEvent

__all__ = [
    "PRIORITY_BULK",
    "PRIORITY_DEFAULT",
    "PRIORITY_REPLY",
    "Limiter",
    "LimiterEvent",
    "Limiters",
    "QueuedJob",
]
