"""Shell completions: the files in completions/ are what the app generates, and they work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from khronos_cli.cli.completion import FILES, SHELLS, render

COMPLETIONS = Path(__file__).resolve().parents[2] / "completions"


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_scripts_match_the_app(shell: str) -> None:
    """completions/ holds exactly what `khronos completion SHELL` prints (`make completions`)."""
    committed = (COMPLETIONS / FILES[shell]).read_text()
    assert committed == render(shell), f"completions/{FILES[shell]} drifted: run `make completions`"


def complete(words: list[str]) -> list[str]:
    """COMPREPLY from the bash script for the command line ``words`` (the last one is current)."""
    script = COMPLETIONS / FILES["bash"]
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f'source "{script}"; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; '
        '_khronos; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_bash_completes_commands_options_and_choices() -> None:
    """Bash completes subcommands, options per command, and enum choices for arguments/options."""
    assert complete(["khronos", "br"]) == ["breakers"]
    assert set(complete(["khronos", "breakers", ""])) >= {"open", "close", "reset"}
    assert "--check" in complete(["khronos", "breakers", "--"])
    assert "--mode" in complete(["khronos", "outage", "start", "--"])
    assert complete(["khronos", "outage", "start", "x", "--mode", ""]) == [
        "down",
        "timeout",
        "slow",
        "errors",
    ]
    assert "anthropic-api" in complete(["khronos", "outage", "start", ""])
    assert "--sandbox" in complete(["khronos", "run", "--s"])


def test_bash_completes_breaker_limiter_and_outage_names() -> None:
    """`breakers open <TAB>` offers the breakers, `limiter watch <TAB>` the limiters, `outage
    stop <TAB>` the dependencies an outage can hit: the names the config and the socket know."""
    from khronos_cli.control.protocol import DEPENDENCIES
    from khronos_cli.settings import BREAKER_DEFAULTS, LIMITER_DEFAULTS

    for action in ("open", "close", "reset"):
        assert complete(["khronos", "breakers", action, ""]) == list(BREAKER_DEFAULTS)
    assert complete(["khronos", "breakers", "open", "open"]) == [
        "openai-api",
        "openai-transcription",
    ]
    assert complete(["khronos", "limiter", "watch", ""]) == list(LIMITER_DEFAULTS)
    assert complete(["khronos", "outage", "stop", ""]) == list(DEPENDENCIES)
