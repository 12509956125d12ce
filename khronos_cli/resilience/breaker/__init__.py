"""Circuit breakers, one concept per module.

* :mod:`.breaker` — :class:`CircuitBreaker`: the call path (``async with``), the timeout watchdog,
  the counters and the snapshot.
* :mod:`.state` — :class:`BreakerState`: closed / open / half-open, overrides and holds.
* :mod:`.window` — the rolling window of outcomes and latencies that decides a trip.
* :mod:`.events` — events, listeners and a breaker's background tasks.
* :mod:`.health` — the periodic health check.
* :mod:`.storage` — where state is shared: memory, or Redis between replicas.
* :mod:`.registry` — the seed's breakers built from the settings.

A new breaker is a ``[breakers.<name>]`` table in the config (see ``config.py``) plus, when its
errors need a classification, an entry in :mod:`.registry`.
"""

from khronos_cli.resilience.breaker.breaker import CircuitBreaker
from khronos_cli.resilience.breaker.events import EVENTS, BreakerEvent
from khronos_cli.resilience.breaker.registry import BreakerRegistry, build_breakers
from khronos_cli.resilience.breaker.state import CLOSED, HALF_OPEN, OPEN

__all__ = [
    "CLOSED",
    "EVENTS",
    "HALF_OPEN",
    "OPEN",
    "BreakerEvent",
    "BreakerRegistry",
    "CircuitBreaker",
    "build_breakers",
]
