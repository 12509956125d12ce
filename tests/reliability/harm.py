"""After hostile input: is the live worker unharmed? (Shared by the hostile and fuzz scenarios.)"""

from __future__ import annotations

from tests.instance import Instance
from tests.reliability.harness import answered
from tests.support import wait_for


def failures(instance: Instance) -> dict[str, int]:
    """Each breaker's lifetime failure count."""
    breakers = instance.public("GET", "/breakers/status").json()
    return {name: int(snap["stats"].get("failures") or 0) for name, snap in breakers.items()}


def unharmed(instance: Instance, before: dict[str, int] | None = None) -> None:
    """Every breaker closed and unforced, with no failure since ``before`` (since the start when
    None), no outage injected, and the bot answers one more message."""
    breakers = instance.public("GET", "/breakers/status").json()
    since = before or {}
    hurt = {
        name: (snap["state"], snap.get("forced"), snap["stats"].get("failures"))
        for name, snap in breakers.items()
        if snap["state"] != "closed"
        or snap.get("forced")
        or int(snap["stats"].get("failures") or 0) != since.get(name, 0)
    }
    assert hurt == {}
    assert instance.khronos("outage", "list", "--json").stdout.strip() == "{}"
    count = int(instance.ledger()["sent"])
    instance.push(700_000 + count, f"still there? {count}")
    wait_for(lambda: answered(instance, count + 1), timeout=30)
