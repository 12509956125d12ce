"""What must hold before the bot starts that the configuration file alone cannot tell: the
secrets it needs are there, the public port's host resolves and its address can be bound, and
the event loop ``KHRONOS_EVENT_LOOP`` names is one the worker can run on.

A failure is a :class:`ConfigError` (exit 78: a supervisor must not restart-loop on it). The
worker requires the credentials and maps a bind failure of its own with :func:`bind_error`;
``khronos run`` runs both checks before it forks anything (after the "already running" check,
which takes precedence: a second ``khronos run`` on a live state directory is told so, not that
its port is taken). A port another process holds is a configuration failure too: the check
before the fork names the address, and a worker that meets it anyway (another process bound it
in between) exits 78 and is not restarted in a loop.

This module is imported by the CLI, so it uses the standard library only.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Mapping

from khronos_cli.errors import ConfigError
from khronos_cli.settings import Settings

__all__ = [
    "EVENT_LOOPS",
    "bind_error",
    "check_event_loop",
    "check_http",
    "check_public_port",
    "loopback",
    "missing_credentials",
    "require_credentials",
]


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def check_event_loop(env: Mapping[str, str]) -> str:
    """The event loop ``KHRONOS_EVENT_LOOP`` gives the worker: ``uvloop`` (``auto``, the default,
    when it is installed) or ``asyncio``. A value it does not know, or uvloop asked for and not
    installed, is refused."""
    wanted = env.get("KHRONOS_EVENT_LOOP", "auto")
    if wanted not in EVENT_LOOPS:
        raise ConfigError("environment", "KHRONOS_EVENT_LOOP", wanted, "auto, uvloop or asyncio")
    if wanted == "asyncio":
        return "asyncio"
    import importlib.util  # here: the other commands that load this module never need it

    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if wanted == "uvloop":
        raise ConfigError(
            "environment", "KHRONOS_EVENT_LOOP", wanted, "uvloop installed (pip install uvloop)"
        )
    return "asyncio"


def missing_credentials(settings: Settings) -> list[str]:
    """The names of the secrets the bot cannot work without and does not have: the bot token,
    and a key for at least one of the two LLMs (``ANTHROPIC_API_KEY or OPENAI_API_KEY``)."""
    missing = []
    if not settings.telegram_token:
        missing.append("TELEGRAM_BOT_TOKEN")
    if not settings.anthropic_api_key and not settings.openai_api_key:
        missing.append("ANTHROPIC_API_KEY or OPENAI_API_KEY")
    return missing


def require_credentials(settings: Settings) -> None:
    """Refuse to run the bot without what it cannot work without, naming every missing secret
    at once (``khronos run --sandbox`` brings its own), and a public port beyond loopback
    without its token (:func:`check_public_port`)."""
    missing = missing_credentials(settings)
    if missing:
        raise ConfigError(
            "environment",
            "missing " + " and ".join(missing),
            None,
            "each set in the environment, in a file named by NAME_FILE, or as a systemd "
            "credential (`khronos run --sandbox` needs none)",
            hidden=True,
        )
    check_public_port(settings)


def loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback only (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_public_port(settings: Settings) -> None:
    """Refuse a public port bound beyond loopback without ``KHRONOS_HTTP_TOKEN``: its write
    endpoints (``POST /messages`` sends to any chat, ``POST /chat`` spends LLM calls) would
    be open to the network."""
    if loopback(settings.http_host) or settings.http_token:
        return
    source = str(settings.config_path) if settings.config_path else "environment"
    raise ConfigError(
        source,
        "http.host",
        settings.http_host,
        "127.0.0.1, ::1 or localhost, or set KHRONOS_HTTP_TOKEN (or KHRONOS_HTTP_TOKEN_FILE): "
        "beyond loopback POST /messages and POST /chat require it as a bearer token",
    )


def bind_error(
    settings: Settings, exc: Exception, env: Mapping[str, str] | None = None
) -> ConfigError | None:
    """What a failure to bind the public port says about the configuration: the ConfigError
    naming ``http.host`` or the port's key (a port in use included: another process holds it), or
    None when it is not the configuration's fault: a DNS server that does not answer right now."""
    host = settings.http_host
    source = str(settings.config_path) if settings.config_path else "environment"
    if isinstance(exc, UnicodeError):  # a host name IDNA cannot encode
        return ConfigError(source, "http.host", host, "a host name this machine can resolve")
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return None
        return ConfigError(source, "http.host", host, "a host name this machine can resolve")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(source, "http.host", host, "an address of this machine, or 0.0.0.0")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return ConfigError(*_port(settings, env), settings.http_port, _in_use(settings))
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        expected = "a port this user may bind (1024 or above, unless it may bind privileged ones)"
        return ConfigError(*_port(settings, env), settings.http_port, expected)
    return None


def check_http(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Raise the ConfigError the worker would meet binding the public port (an ``http.host``
    that does not resolve or is not this machine's, a privileged port), and one for a port
    another process holds, so that ``khronos run`` can refuse before it forks anything. Binds
    and closes at once."""
    try:
        found = socket.getaddrinfo(
            settings.http_host, settings.http_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        bound = 0
        failure: OSError | None = None
        for family, kind, proto, _, address in found:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as exc:  # asyncio skips a family the host has not enabled
                    if exc.errno != errno.EADDRNOTAVAIL:
                        raise
                    failure = exc
                else:
                    bound += 1
        if not bound and failure is not None:
            raise failure
    except (OSError, UnicodeError) as exc:
        refused = bind_error(settings, exc, env)
        if refused is not None:
            raise refused from None


def _in_use(settings: Settings) -> str:
    address = f"{settings.http_host}:{settings.http_port}"
    return f"a free port ({address} is in use by another process: stop it or choose another)"


def _port(settings: Settings, env: Mapping[str, str] | None) -> tuple[str, str]:
    """The source and key the port came from: ``KHRONOS_HTTP_PORT`` (``--port``) or the file."""
    if "KHRONOS_HTTP_PORT" in (os.environ if env is None else env):
        return "environment", "KHRONOS_HTTP_PORT"
    return str(settings.config_path) if settings.config_path else "defaults", "http.port"
