"""Every error khronos raises on purpose, and the exit codes the CLI maps them to.

The core never calls ``sys.exit``: it raises one of these, and only ``khronos_cli.cli`` turns
them into exit codes and one-line messages. Third-party errors are translated at one boundary
per integration and chained with ``raise ... from exc``.

::

    KhronosError
    ├── ConfigError                 bad khronos.toml / environment          -> exit 78
    ├── BreakerError
    │   ├── CircuitOpenError        rejected at once: open, forced or held
    │   └── CallTimeoutError        the call ran past the breaker's timeout
    ├── LimiterError
    │   ├── JobDroppedError         the queue was full (HTTP 429 + Retry-After)
    │   ├── JobExpiredError         the job ran past its expiration and was cancelled
    │   └── LimiterStoppedError     the limiter is stopping and takes no new jobs
    ├── StateDirError               the state directory cannot be ours      -> exit 78
    ├── UpstreamError               an external API failed (status, retry_after, outage or not)
    │   └── ChatMigratedError       Telegram: the group became a supergroup with a new chat id
    ├── InjectedFaultError          a call failed because an injected outage said so
    ├── OutageError                 an outage asked for with a value khronos cannot use (400)
    ├── StoreError                  SQLite refused an operation, or the store is closed
    ├── ClaimPendingError           another replica is taking this update right now
    ├── SandboxError                a sandbox stand-in cannot bind its port, or is not started
    └── ControlError                the control socket refused or failed a request
        ├── NotRunningError         no instance on that state dir           -> exit 3
        └── AlreadyRunningError     a live instance already owns that state dir
"""

from __future__ import annotations

import enum

from khronos_cli.redaction import scrub

__all__ = [
    "AlreadyRunningError",
    "BreakerError",
    "CallTimeoutError",
    "ChatMigratedError",
    "CircuitOpenError",
    "ClaimPendingError",
    "ConfigError",
    "ControlError",
    "ExitCode",
    "InjectedFaultError",
    "JobDroppedError",
    "JobExpiredError",
    "KhronosError",
    "LimiterError",
    "LimiterStoppedError",
    "NotRunningError",
    "OutageError",
    "SandboxError",
    "StateDirError",
    "StoreError",
    "UpstreamError",
]


class ExitCode(enum.IntEnum):
    """Process exit codes, as DESIGN.md promises them to operators and supervisors."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_RUNNING = 3
    CONFIG = 78  # EX_CONFIG: supervisors must not restart-loop on it


class KhronosError(Exception):
    """Base of every error khronos raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(KhronosError):
    """The configuration file or environment holds a value khronos cannot use.

    The message names the source, the key, the value and what was expected, on one line. The
    value is shown scrubbed of anything shaped like a secret and cut to :data:`SHOWN_VALUE`
    characters; with ``hidden=True`` (a token, a key, an unknown key's string that may be one) it
    is neither shown nor kept.
    """

    exit_code = ExitCode.CONFIG

    def __init__(
        self, source: str, key: str, value: object, expected: str, *, hidden: bool = False
    ) -> None:
        self.source = source
        self.key = key
        self.value = None if hidden else value
        self.expected = expected
        shown = "" if hidden else f" = {_shown(value)}"
        super().__init__(f"config {source}: {key}{shown}: expected {expected}")


SHOWN_VALUE = 120  # characters of a bad value quoted in a ConfigError


def _shown(value: object) -> str:
    try:
        text = scrub(repr(value)[: SHOWN_VALUE * 4])  # scrubbed before the cut: no half secrets
    except (RecursionError, ValueError):  # nested too deep, or an int of 4,300+ digits
        return "(a value too big or too deeply nested to show)"
    return text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 1] + "…"


class BreakerError(KhronosError):
    """A circuit breaker refused or cut short a call."""

    def __init__(self, breaker: str, message: str) -> None:
        self.breaker = breaker
        super().__init__(message)


class CircuitOpenError(BreakerError):
    """Rejected at once: the breaker is open, forced open, or held by an upstream retry-after."""

    def __init__(self, breaker: str, retry_in: float | None = None, reason: str = "open") -> None:
        self.retry_in = retry_in
        self.reason = reason
        hint = f"; next trial in {retry_in:.1f}s" if retry_in is not None else ""
        super().__init__(breaker, f"circuit {breaker!r} is {reason}{hint}")


class CallTimeoutError(BreakerError):
    """The call ran longer than the breaker's timeout and was cancelled."""

    def __init__(self, breaker: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(breaker, f"call through {breaker!r} timed out after {timeout:g}s")


class LimiterError(KhronosError):
    """A limiter refused, dropped or cut short a job."""

    def __init__(self, limiter: str, message: str) -> None:
        self.limiter = limiter
        super().__init__(message)


class JobDroppedError(LimiterError):
    """The job was dropped because the queue was full; retry after ``retry_after`` seconds."""

    def __init__(
        self, limiter: str, key: object, retry_after: float, reason: str = "queue full"
    ) -> None:
        self.key = key
        self.retry_after = retry_after
        self.reason = reason
        super().__init__(
            limiter, f"limiter {limiter!r} dropped a job ({reason}); retry after {retry_after:.1f}s"
        )


class JobExpiredError(LimiterError):
    """The job did not finish within its expiration and was cancelled."""

    def __init__(self, limiter: str, expiration: float) -> None:
        self.expiration = expiration
        super().__init__(limiter, f"job in limiter {limiter!r} expired after {expiration:g}s")


class LimiterStoppedError(LimiterError):
    """The limiter is stopping and accepts no new jobs."""

    def __init__(self, limiter: str) -> None:
        super().__init__(limiter, f"limiter {limiter!r} is stopping and takes no new jobs")


class UpstreamError(KhronosError):
    """An external API (Telegram, Anthropic, OpenAI) failed or answered an error.

    ``status`` is the HTTP status (None when no answer came: refused, reset, timed out);
    ``retry_after`` the seconds the upstream asked us to wait (429, 503); ``should_retry`` the
    upstream's own verdict (Anthropic's and OpenAI's ``x-should-retry`` header), when it gave
    one. The message never contains a URL or a token.
    """

    def __init__(
        self,
        dependency: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        self.dependency = dependency
        self.status = status
        self.retry_after = retry_after
        self.code = code
        self.should_retry = should_retry
        super().__init__(f"{dependency}: {message}")

    @property
    def is_outage(self) -> bool:
        """True when the upstream is down or overloaded (no answer, 408, 429, 5xx), or says a
        retry would help (``x-should-retry: true``); False when it says a retry would not.

        That is a breaker failure; our own mistakes (400, 401, 403, 404) say nothing of its health.
        """
        if self.should_retry is not None:
            return self.should_retry
        return self.status is None or self.status in (408, 429) or self.status >= 500


class ChatMigratedError(UpstreamError):
    """Telegram refused a send because the group was upgraded to a supergroup: the old chat id
    is dead, ``new_chat_id`` is where the chat lives now (``parameters.migrate_to_chat_id``)."""

    def __init__(self, dependency: str, message: str, *, chat_id: int, new_chat_id: int) -> None:
        self.chat_id = chat_id
        self.new_chat_id = new_chat_id
        super().__init__(dependency, message, status=400, code="migrated")


class SandboxError(KhronosError):
    """A sandbox stand-in could not do what was asked (bind its port, serve before start)."""


class ControlError(KhronosError):
    """Talking to a running instance over its control socket failed, or it refused the request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class NotRunningError(ControlError):
    """No instance answers on the control socket of that state dir."""

    exit_code = ExitCode.NOT_RUNNING

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        super().__init__(
            f"no khronos instance is running on {socket_path}; "
            "start one with `khronos run` or pass the right --state-dir"
        )


class AlreadyRunningError(ControlError):
    """A live instance answers on that state dir's socket: refuse to start a second one."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        super().__init__(
            f"khronos is already running on {socket_path}; stop it with `khronos stop` "
            "or use another --state-dir"
        )


class StateDirError(KhronosError):
    """The state directory cannot be ours: refused at start, like a bad configuration."""

    exit_code = ExitCode.CONFIG


class InjectedFaultError(KhronosError):
    """A call failed because an injected outage said so (raised where no httpx error fits)."""

    def __init__(self, dependency: str, mode: str, status: int | None = None) -> None:
        self.dependency = dependency
        self.mode = mode
        self.status = status
        what = f"HTTP {status}" if status is not None else mode
        super().__init__(f"injected outage on {dependency!r}: {what}")


class OutageError(KhronosError, ValueError):
    """An outage was asked for with a value khronos cannot use (mode, duration, probability...)."""


class StoreError(KhronosError):
    """A store operation failed: SQLite refused it, the file is unusable, or the store is closed."""

    def __init__(self, path: str, operation: str, message: str) -> None:
        self.path = path
        self.operation = operation
        super().__init__(f"database {path}: {operation} failed: {message}")


class ClaimPendingError(KhronosError):
    """Another replica is taking this update right now: do not confirm it to Telegram yet."""
