"""`khronos outage drill` against a live `khronos run --sandbox`: a passing drill, a drill whose
breaker never opens, an interrupted drill, and the steady-state refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from khronos_cli.control.client import ControlClient
from tests.instance import Instance
from tests.support import wait_for

CHECKS = ["steady_state", "breaker_opened", "users_served", "outage_ended", "recovered"]


def start_drill(instance: Instance, *args: str) -> subprocess.Popen[str]:
    """`khronos outage drill ... --json` as a background process on this instance."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "khronos_cli",
            "outage",
            "drill",
            *args,
            "--json",
            "--state-dir",
            str(instance.state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def finish(drill: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    """The drill's exit code, JSON report and stderr once it ends."""
    stdout, stderr = drill.communicate(timeout=60)
    return drill.returncode, json.loads(stdout), stderr


def control(instance: Instance, path: str) -> Any:
    with ControlClient(instance.state_dir) as client:
        return client.get(path)


def outage_on(instance: Instance, name: str) -> bool:
    return any(o["name"] == name for o in control(instance, "/outages"))


def no_outage_left(instance: Instance) -> bool:
    listed = instance.khronos("outage", "list", "--json")
    return listed.returncode == 0 and json.loads(listed.stdout) == {}


def test_a_drill_on_anthropic_api_passes_and_users_get_openai(instance: Instance) -> None:
    """Users' messages during the drill are answered by OpenAI; every check passes; exit 0."""
    drill = start_drill(
        instance,
        "anthropic-api",
        "--for",
        "4s",
        "--expect-open-within",
        "4s",
        "--expect-recovery-within",
        "20s",
        "--require-traffic",
    )
    wait_for(lambda: outage_on(instance, "anthropic-api"), timeout=30)
    for i in range(3):
        instance.push(7000 + i, f"during the drill {i}")
    code, report, stderr = finish(drill)
    assert code == 0, stderr
    assert report["passed"] is True and report["interrupted"] is None
    assert [check["check"] for check in report["checks"]] == CHECKS
    assert all(check["passed"] is True for check in report["checks"]), report["checks"]
    assert report["traffic"]["updates"] == 3
    assert report["traffic"]["answered"]["openai"] + report["traffic"]["answered"]["fallback"] >= 1
    assert report["traffic"]["answered"]["anthropic"] == 0
    assert "passed" in stderr.splitlines()[-1]
    assert no_outage_left(instance) and "outage started on anthropic-api" in instance.log()
    wait_for(lambda: instance.ledger()["answered"] == 3, timeout=30)
    assert all(d["text"].startswith("openai echo: ") for d in instance.deliveries())


def test_a_breaker_that_never_opens_fails_the_drill(instance: Instance) -> None:
    """An outage too mild to trip the breaker fails `breaker_opened`, exits 1, ends the outage."""
    drill = start_drill(
        instance,
        "anthropic-api",
        "--mode",
        "slow",
        "--latency",
        "10ms",
        "--for",
        "2s",
        "--expect-open-within",
        "1s",
    )
    code, report, _ = finish(drill)
    assert code == 1 and report["passed"] is False
    checks = {check["check"]: check for check in report["checks"]}
    assert checks["breaker_opened"]["passed"] is False
    assert "still closed" in checks["breaker_opened"]["detail"]
    assert checks["users_served"]["passed"] is True  # a quiet bot is not a deviation
    assert "no user traffic" in checks["users_served"]["detail"]
    assert checks["outage_ended"]["passed"] is True and checks["recovered"]["passed"] is True
    assert no_outage_left(instance)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_drill_leaves_no_outage(instance: Instance, signum: int) -> None:
    """SIGINT or SIGTERM to the drill mid-outage ends the outage; the report says interrupted."""
    drill = start_drill(instance, "anthropic-api", "--for", "5m")
    wait_for(lambda: control(instance, "/breakers")["anthropic-api"]["state"] == "open", timeout=30)
    assert outage_on(instance, "anthropic-api")
    drill.send_signal(signum)
    code, report, _ = finish(drill)
    assert code == 1 and report["interrupted"] == signal.Signals(signum).name
    ended = {check["check"]: check for check in report["checks"]}["outage_ended"]
    assert ended["passed"] is True and ended["detail"] == "ended by the drill"
    assert no_outage_left(instance)


def test_an_open_breaker_is_refused_before_any_outage(instance: Instance) -> None:
    """With the breaker forced open the drill refuses at the steady state, exit 1, no outage."""
    forced = instance.khronos("breakers", "open", "anthropic-api", "--for", "1m")
    assert forced.returncode == 0, forced.stderr
    code, report, stderr = finish(start_drill(instance, "anthropic-api", "--for", "2s"))
    assert code == 1 and report["passed"] is False
    assert [check["check"] for check in report["checks"]] == ["steady_state"]
    assert "is open, not closed" in report["checks"][0]["detail"]
    assert "refused" in stderr and "forced open" in stderr
    assert control(instance, "/breakers")["anthropic-api"]["forced"]["state"] == "open"
    assert "outage started" not in instance.log()
