"""The CLI as a real subprocess: thin imports, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "pybreaker",
    "pyrate_limiter",
    "redis",
    "aiohttp",
    "aiosqlite",
    "sqlite3",
    "uvicorn",
    "httpx",
    "prometheus_client",
)


def khronos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "khronos_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def test_importing_the_cli_loads_no_runtime() -> None:
    """Building the whole `khronos` command tree pulls in none of the runtime's modules nor
    its heavy dependencies (the CLI is a thin client of the control socket)."""
    code = (
        "import sys, typer, khronos_cli.cli.app as app\n"
        "typer.main.get_command(app.app)\n"
        "print('\\n'.join(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "khronos_cli.cli.app" in loaded  # the tree was really built
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    runtime = ("runtime", "bot", "resilience", "upstream", "sandbox")
    assert not {
        m for m in loaded if m.split(".")[:2][-1] in runtime and m.startswith("khronos_cli.")
    }


def test_version_and_help() -> None:
    """`python -m khronos_cli --version` prints the version; no arguments shows help."""
    assert khronos("--version").stdout.startswith("khronos ")
    shown = khronos()
    assert "Usage" in shown.stdout + shown.stderr


def test_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    """A bad config value exits 78 with one line naming file, key and value, and no traceback."""
    path = tmp_path / "khronos.toml"
    path.write_text('[breakers.anthropic-api]\ntimeout = "fast"\n')
    result = khronos("config", "--config", str(path), "--state-dir", str(tmp_path))
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "breakers.anthropic-api.timeout" in lines[0]
    assert "'fast'" in lines[0] and "Traceback" not in result.stderr


def test_config_json_has_effective_settings_and_hides_secrets(tmp_path: Path) -> None:
    """`khronos config --json` prints the merged settings; secrets show only as set/unset."""
    env = {"TELEGRAM_BOT_TOKEN": "999:never-print-me"}
    result = khronos("config", "--json", "--sandbox", "--state-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["telegram_token"] == "set" and data["openai_api_key"] == "unset"
    assert data["breakers"]["database"]["error_threshold"] == 30
    assert data["limiters"]["telegram"]["global_rates"] == ["30/s"]
    assert "never-print-me" not in result.stdout + result.stderr


def test_fast_path_takes_only_the_machine_reads() -> None:
    """Exactly `status|breakers|limiter [--all]` and `outage list`, tables or `--json`, with
    `--state-dir D` and, for breakers, `--check`, skip Typer."""
    from pathlib import Path

    from khronos_cli.cli.fast import Read, _parse

    assert _parse(["breakers", "--json"]) == Read(("breakers",), None)
    assert _parse(["--state-dir", "/x", "outage", "list", "--json"]) == Read(
        ("outage", "list"), Path("/x")
    )
    assert _parse(["breakers", "--json", "--check", "--state-dir=/y", "--all"]) == Read(
        ("breakers",), Path("/y"), check=True, every=True
    )
    assert _parse(["limiter", "--all", "--json"]) == Read(("limiter",), None, every=True)
    assert _parse(["breakers"]) == Read(("breakers",), None, human=True)
    for slow in (
        ["breakers", "--json", "--watch"],
        ["status", "--json", "--check"],
        ["status", "--json", "--watch"],
        ["outage", "list", "--json", "--all"],
        ["breakers", "open", "x", "--json"],
        ["limiter", "--json", "--help"],
        ["limiter", "watch", "--json"],
        ["stop", "--json"],
        ["status", "--state-dir"],
    ):
        assert _parse(slow) is None, slow


def test_the_fast_paths_table_matches_the_typer_tree() -> None:
    """Every form the fast path takes is a Typer command that has each option it accepts
    (global options such as --state-dir may live on the group)."""
    import typer

    from khronos_cli.cli.app import app
    from khronos_cli.cli.fast import READS

    root = typer.main.get_command(app)
    for words, options in READS.items():
        command, chain = root, [root]
        for word in words:
            found = getattr(command, "commands", {}).get(word)
            assert found is not None, f"no command {' '.join(words)!r}"
            command = found
            chain.append(command)
        named = {name for cmd in chain for param in cmd.params for name in param.opts}
        assert options <= named, (words, options - named)


def test_bad_durations_are_usage_errors() -> None:
    """A bad --for or --latency exits 2 (a usage error, as every bad argument) with one line."""
    for args in (
        ["breakers", "open", "anthropic-api", "--for", "nonsense"],
        ["outage", "start", "anthropic-api", "--latency", "nonsense"],
        ["outage", "start", "anthropic-api", "--for", "1e20"],
    ):
        result = khronos(*args, "--state-dir", "/nonexistent/khronos")
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_fast_path_exit_3_matches_the_full_cli(tmp_path: Path) -> None:
    """With nothing running, the fast path and Typer give the same exit code and message."""
    fast = khronos("breakers", "--json", "--state-dir", str(tmp_path))
    full = khronos("breakers", "--state-dir", str(tmp_path))
    assert fast.returncode == full.returncode == 3
    assert fast.stderr.strip() == full.stderr.strip()


FULL_CLI = "from khronos_cli.cli.app import app; app()"  # Typer's tree, never the fast path


def test_config_takes_the_fast_path_with_the_typer_commands_bytes(tmp_path: Path) -> None:
    """`khronos config` (tables or --json; --sandbox; a bad file; missing secrets) prints the
    same bytes, stderr and exit code through the fast path as through the Typer app."""
    from khronos_cli.cli.fast import _parse

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "khronos.toml").write_text('[breakers.database]\ntimeout = "fast"\n')
    env = {key: value for key, value in os.environ.items() if not key.endswith(("_KEY", "TOKEN"))}
    forms = [
        ("config", "--sandbox"),
        ("config", "--sandbox", "--json"),
        ("config",),
        ("config", "--json"),
    ]
    for directory in (tmp_path / "good", bad):
        for form in forms:
            args = [*form, "--state-dir", str(directory)]
            assert _parse(args) is not None
            fast, full = (
                subprocess.run(
                    [sys.executable, *entry, *args],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env={**env, "NO_COLOR": "1"},
                )
                for entry in (["-m", "khronos_cli"], ["-c", FULL_CLI])
            )
            assert (fast.returncode, fast.stdout, fast.stderr) == (
                full.returncode,
                full.stdout,
                full.stderr,
            ), (directory.name, form)
            expected = 78 if directory is bad or "--sandbox" not in form else 0
            assert fast.returncode == expected, (directory.name, form, fast.stderr)


def test_piped_reads_load_neither_rich_nor_ssl(tmp_path: Path) -> None:
    """A fast read printing to a pipe draws its plain tables without importing rich, Typer or
    ssl, and a terminal (TTY_COMPATIBLE=1) gets rich's drawing with styles."""
    code = (
        "import sys\nfrom khronos_cli.cli.fast import run\n"
        f"code = run(['config', '--sandbox', '--state-dir', {str(tmp_path)!r}])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'typer', 'ssl'}))\n"
    )
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert [line.split() for line in piped.stdout.splitlines()[:2]] == [
        ["khronos"],
        ["setting", "value"],
    ]
    assert piped.stdout.splitlines()[-1] == "[]"
    env = {**os.environ, "TTY_COMPATIBLE": "1"}
    env.pop("NO_COLOR", None)
    drawn = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "\x1b[" in drawn.stdout  # styled by rich
    assert "'rich'" in drawn.stdout.splitlines()[-1]


def test_a_json_read_loads_no_typing_rich_or_ssl(tmp_path: Path) -> None:
    """`khronos status --json` on the fast path imports none of typing, rich, Typer or ssl."""
    code = (
        "import sys\nfrom khronos_cli.cli.fast import run\n"
        f"code = run(['status', '--json', '--state-dir', {str(tmp_path)!r}])\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(code, sorted(loaded & {'typing', 'rich', 'typer', 'ssl'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "3 []"


def test_backup_and_drill_tables_print_plain_columns_when_piped(tmp_path: Path) -> None:
    """`khronos backup`, `backup --list` and a drill's report, piped, print plain columns (never
    an object's repr)."""
    from khronos_cli.cli.drill import render
    from khronos_cli.cli.plain import lines
    from tests.support import khronos_database

    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    khronos_database(state / "khronos.db")
    made = khronos("backup", "--state-dir", str(state))
    listed = khronos("backup", "--list", "--state-dir", str(state))
    assert made.returncode == listed.returncode == 0, made.stderr + listed.stderr
    assert made.stdout.split()[0] == "path" and "object at 0x" not in made.stdout
    assert listed.stdout.split()[:2] == ["name", "taken"]
    check = {"check": "opens", "passed": True, "seconds": 1.0, "limit_s": 20, "detail": "x"}
    report = {"name": "anthropic-api", "mode": "down", "checks": [check]}
    drawn = list(lines(render(report)))
    assert drawn[0].split() == ["check", "result", "seconds", "limit", "detail"]
    assert drawn[1].split() == ["opens", "passed", "1.00", "20", "x"]
