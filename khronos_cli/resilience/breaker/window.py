"""Rolling call statistics for a circuit breaker: O(1) per call, bounded memory, no sort on read.

:class:`RollingWindow` splits its duration (10 s by default) into ``buckets`` slots (10 by
default) held in fixed arrays and indexed by ``int(now / width) % buckets`` (Hystrix's and
opossum's model, without opossum's sort-every-window-on-every-failure). A slot keeps
pre-aggregated counts: successes, failures, a latency sum and a dense latency histogram. When time
moves past a slot its counts are zeroed and its histogram subtracted from the running one, so a
write is a handful of list increments and a read walks fixed arrays once.

Only calls that ran are recorded: short-circuited (rejected) calls never reach the window, so they
are not in the error-percentage denominator.

Latency bins are log-scale and HDR-like: eight sub-bins per power of two of microseconds (~6 %
relative error) from 1 µs to ~2 min; slower calls land in the last bin. Percentiles walk the
bins, never sort samples, and memory does not grow with the call rate.

``reset_counts()`` forgets the successes and failures (a breaker does so when it closes, so old
failures cannot re-trip it at once) but keeps the latency figures, which still describe the
dependency.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["BINS", "LATENCY_BOUNDS", "RollingWindow", "latency_bin"]

# The upper bounds (seconds) of the cumulative latency histogram kept since start, for
# Prometheus (``khronos_breaker_call_duration_seconds``): 5 ms to a minute.
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_SUB = 8  # sub-bins per power of two
_OCTAVES = 28  # 2**27 µs ~ 134 s
BINS = _OCTAVES * _SUB + 1
_frexp = math.frexp


def latency_bin(seconds: float) -> int:
    """The histogram bin of a latency: 0 below 1 µs, then eight bins per doubling."""
    micros = seconds * 1e6
    if micros < 1.0:
        return 0
    mantissa, exponent = _frexp(micros)  # micros = mantissa * 2**exponent, 0.5 <= mantissa < 1
    index = (exponent - 1) * _SUB + int((mantissa * 2.0 - 1.0) * _SUB) + 1
    return index if index < BINS else BINS - 1


def bin_middle_ms(index: int) -> float:
    """A representative value of a bin (its middle), in milliseconds."""
    if index == 0:
        return 0.0005
    octave, sub = divmod(index - 1, _SUB)
    return (1 << octave) * (1.0 + (sub + 0.5) / _SUB) / 1000.0


class RollingWindow:
    """Successes, failures and latencies of the last ``duration`` seconds, in ``buckets`` slots.

    ``now`` is whatever clock the caller uses (the breaker's injected clock); latencies are
    seconds.
    """

    __slots__ = (
        "_bad",
        "_hist",
        "_lat",
        "_lat_sum",
        "_ok",
        "_size",
        "_tick",
        "_total",
        "_total_sum",
        "_width",
        "duration",
    )

    def __init__(self, duration: float = 10.0, buckets: int = 10) -> None:
        if duration <= 0 or buckets < 1:
            raise ValueError(
                f"a rolling window needs duration > 0 and buckets >= 1, "
                f"got {duration!r} and {buckets!r}"
            )
        self.duration = duration
        self._size = buckets
        self._width = duration / buckets
        self._tick = 0
        self._ok = [0] * buckets
        self._bad = [0] * buckets
        self._lat_sum = [0.0] * buckets
        self._lat = [[0] * BINS for _ in range(buckets)]
        self._hist = [0] * BINS  # the sum of the slots' histograms
        self._total = [0] * (len(LATENCY_BOUNDS) + 1)  # since start, by LATENCY_BOUNDS (+Inf)
        self._total_sum = 0.0

    # -- writes (the hot path) ----------------------------------------------------------------

    def success(self, now: float, latency: float) -> None:
        tick = int(now / self._width)
        if tick != self._tick:
            self._advance(tick)
        slot = self._tick % self._size
        self._ok[slot] += 1
        self._add_latency(slot, latency)

    def failure(self, now: float, latency: float) -> None:
        tick = int(now / self._width)
        if tick != self._tick:
            self._advance(tick)
        slot = self._tick % self._size
        self._bad[slot] += 1
        self._add_latency(slot, latency)

    def _add_latency(self, slot: int, latency: float) -> None:
        micros = latency * 1e6
        if micros < 1.0:
            index = 0
        else:
            mantissa, exponent = _frexp(micros)
            index = (exponent - 1) * _SUB + int((mantissa * 2.0 - 1.0) * _SUB) + 1
            if index >= BINS:
                index = BINS - 1
        self._lat[slot][index] += 1
        self._hist[index] += 1
        self._lat_sum[slot] += latency
        self._total[bisect.bisect_left(LATENCY_BOUNDS, latency)] += 1
        self._total_sum += latency

    def reset_counts(self) -> None:
        """Forget every success and failure (the breaker closed); latency figures stay."""
        self._ok = [0] * self._size
        self._bad = [0] * self._size

    # -- reads --------------------------------------------------------------------------------

    def cumulative(self) -> tuple[list[tuple[float, int]], float]:
        """Every latency since start as a cumulative histogram: ``([(bound, calls at most
        bound), ..., (inf, all calls)], sum of seconds)``; never reset, never expired."""
        buckets, running = [], 0
        for bound, count in zip((*LATENCY_BOUNDS, math.inf), self._total, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, self._total_sum

    def counts(self, now: float) -> tuple[int, int]:
        """``(calls, failures)`` in the window ending at ``now``."""
        self.expire(now)
        failures = sum(self._bad)
        return sum(self._ok) + failures, failures

    def error_percentage(self, now: float) -> float:
        calls, failures = self.counts(now)
        return failures * 100.0 / calls if calls else 0.0

    def latency_ms(self, now: float, quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> list[Any]:
        """``[mean, *percentiles]`` of the window's latencies in ms (``None`` when empty)."""
        self.expire(now)
        count = sum(self._hist)
        if not count:
            return [None] * (len(quantiles) + 1)
        result: list[Any] = [sum(self._lat_sum) / count * 1000.0]
        ranks = [max(1, math.ceil(q * count)) for q in quantiles]
        seen = 0
        for index, hits in enumerate(self._hist):
            if hits:
                seen += hits
                while len(result) <= len(ranks) and seen >= ranks[len(result) - 1]:
                    result.append(bin_middle_ms(index))
        return result

    def expire(self, now: float) -> None:
        """Drop the slots that ``now`` has moved past."""
        tick = int(now / self._width)
        if tick != self._tick:
            self._advance(tick)

    # -- eviction -----------------------------------------------------------------------------

    def _advance(self, tick: int) -> None:
        if tick < self._tick:  # a clock that went backwards: keep writing into the current slot
            return
        for step in range(1, min(tick - self._tick, self._size) + 1):
            slot = (self._tick + step) % self._size
            self._ok[slot] = 0
            self._bad[slot] = 0
            if any(self._lat[slot]):
                hist = self._hist
                for index, hits in enumerate(self._lat[slot]):
                    if hits:
                        hist[index] -= hits
                self._lat[slot] = [0] * BINS
                self._lat_sum[slot] = 0.0
        self._tick = tick
