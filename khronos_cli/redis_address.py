"""What ``redis_url`` names: one server, a Sentinel-watched master or a Cluster, and its options.

Schemes (each also ``rediss...`` for TLS)::

    redis://[user:password@]host:port[/db]            one server (or its TLS twin rediss://)
    unix:///path/to/redis.sock[?db=N]                 one server on a unix socket
    redis+sentinel://[user:password@]host:port[,host:port...]/<master>[/db]
    redis+cluster://[user:password@]host:port[,host:port...]

With Sentinel, the hosts are the Sentinels, ``<master>`` the name they monitor, and the user and
password authenticate at the master (and its replicas); the Sentinels are asked without them.
With Cluster, the hosts are any nodes to start from (the client learns the rest) and the
database is always 0. The query may hold the TLS options redis-py understands
(:data:`TLS_OPTIONS`): ``ssl_ca_certs`` (a CA bundle file), ``ssl_certfile`` and
``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs`` (``required``, the default, ``optional``
or ``none``) and ``ssl_check_hostname``; and ``db`` for a server or a Sentinel's master.

This module is imported by the CLI (config checking), so it uses the standard library only; the
worker's client is built from a :class:`RedisAddress` by ``resilience/redis_client.py``.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from typing import Literal

__all__ = ["SCHEMES", "TLS_OPTIONS", "RedisAddress", "parse"]

Topology = Literal["server", "sentinel", "cluster"]
SCHEMES: dict[str, tuple[Topology, bool]] = {  # scheme -> (topology, TLS)
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("required", "optional", "none")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclasses.dataclass(frozen=True)
class RedisAddress:
    """A parsed ``redis_url``. ``url`` is the original (a one-server client is made from it);
    ``tls`` holds the TLS options as redis-py's keyword arguments."""

    url: str
    topology: Topology
    secure: bool
    hosts: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    db: int = 0
    master: str | None = None
    tls: tuple[tuple[str, str | bool], ...] = ()


def parse(url: str) -> RedisAddress:
    """The address ``url`` names; ValueError saying what is wrong (never quoting a password)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("no whitespace or control characters")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a scheme among " + ", ".join(f"{s}://" for s in SCHEMES))
    topology, secure = SCHEMES[scheme.lower()]
    split = urllib.parse.urlsplit("x://" + rest)
    query = _query(split.query)
    tls = _tls(query, secure)
    db = _int(query.pop("db", "0"), "db")
    if query:
        raise ValueError(
            f"no query option {sorted(query)[0]!r} (known: db, {', '.join(TLS_OPTIONS)})"
        )
    if scheme.lower() == "unix":
        if not split.path or split.netloc.rpartition("@")[2]:
            raise ValueError("unix:///path/to/redis.sock")
        return RedisAddress(url, "server", False, (), db=db)
    userinfo, _, hostlist = split.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    hosts = tuple(_host(item) for item in hostlist.split(","))
    path = [part for part in split.path.split("/") if part]
    master = None
    if topology == "server":
        if len(hosts) != 1 or len(path) > 1:
            raise ValueError("one host:port, then /db at most")
        db = _int(path[0], "the database") if path else db
    elif topology == "sentinel":
        if not path or len(path) > 2:
            raise ValueError("the Sentinels' host:port list, then /<master name>[/db]")
        master = urllib.parse.unquote(path[0])
        db = _int(path[1], "the database") if len(path) == 2 else db
    elif path or db:
        raise ValueError("the nodes' host:port list and no database (a Cluster has only 0)")
    return RedisAddress(url, topology, secure, hosts, username, password, db, master, tls)


def _query(text: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        if name in query:
            raise ValueError(f"query option {name!r} once")
        query[name] = value
    return query


def _tls(query: dict[str, str], secure: bool) -> tuple[tuple[str, str | bool], ...]:
    options: list[tuple[str, str | bool]] = []
    for name in TLS_OPTIONS:
        if name not in query:
            continue
        value = query.pop(name)
        if not secure:
            raise ValueError(f"{name} with a rediss scheme only (TLS)")
        if name in _FILES and not os.access(value, os.R_OK):
            raise ValueError(f"{name} naming a readable file")
        if name == "ssl_cert_reqs" and value.lower() not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs one of {', '.join(_CERT_REQS)}")
        if name == "ssl_check_hostname":
            if value.lower() not in _BOOLS:
                raise ValueError("ssl_check_hostname true or false")
            options.append((name, _BOOLS[value.lower()]))
            continue
        options.append((name, value.lower() if name == "ssl_cert_reqs" else value))
    return tuple(options)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, has_password, password = userinfo.partition(":")
    username = urllib.parse.unquote(user) or None
    return username, urllib.parse.unquote(password) if has_password else None


def _host(item: str) -> tuple[str, int]:
    try:
        split = urllib.parse.urlsplit("x://" + item)
        port = split.port
    except ValueError:
        raise ValueError("host:port items with valid ports") from None
    if not split.hostname or split.netloc != item:
        raise ValueError("host:port items, comma-separated")
    return split.hostname, port or 6379


def _int(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        raise ValueError(f"{what} a number")
    return int(text)
