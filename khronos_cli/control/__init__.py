"""The control socket: HTTP/1.1 + JSON over ``<state-dir>/khronos.sock``.

``protocol`` (wire format, no I/O) is shared; ``server`` runs in the worker; ``client`` is what the
CLI imports, and it pulls in neither aiohttp nor the runtime.
"""
