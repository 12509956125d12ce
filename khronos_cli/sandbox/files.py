"""The files users send the sandbox Telegram (voice notes), behind ``getFile`` and ``/file/``.

A voice note is stored as the bytes of :func:`~khronos_cli.sandbox.records.voice_file_bytes`
(its transcript, which the OpenAI stand-in reads back), under a ``file_id`` and a ``file_path``.
Its ``Voice`` object carries ``duration`` and ``file_size`` as Telegram's does.

A voice note may instead *declare* a size without the bytes being allocated: one over
:data:`MAX_DOWNLOAD_SIZE` (the Bot API's 20 MB download limit) makes ``getFile`` answer
``400 "Bad Request: file is too big"``, which is what the real server says
(``telegram-bot-api/Client.cpp``, ``MAX_DOWNLOAD_FILE_SIZE``); the file can never be downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from khronos_cli.sandbox.records import voice_file_bytes

__all__ = ["MAX_DOWNLOAD_SIZE", "FileStore", "FileTooBig", "StoredFile", "UnknownFile"]

MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024
_OPUS_BYTES_PER_SECOND = 4000  # a voice note is Opus at ~32 kbit/s
Json = dict[str, Any]


class UnknownFile(LookupError):
    """No file has this ``file_id``."""


class FileTooBig(Exception):
    """The file is over the Bot API's download limit."""


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    file_size: int
    data: bytes | None  # None: declared only (too big to download)


class FileStore:
    """Voice notes by ``file_id`` and by ``file_path``."""

    def __init__(self) -> None:
        self._by_id: dict[str, StoredFile] = {}
        self._by_path: dict[str, StoredFile] = {}

    def add_voice(self, transcript: str, *, file_size: int | None = None) -> Json:
        """Store a voice note transcribing to ``transcript``; returns its ``Voice`` object.

        ``file_size`` over :data:`MAX_DOWNLOAD_SIZE` declares a file too big to download (no
        bytes are allocated); a smaller one is ignored: the file's size is its bytes'."""
        number = len(self._by_id) + 1
        data: bytes | None = voice_file_bytes(transcript)
        size = len(data) if data is not None else 0
        if file_size is not None and file_size > MAX_DOWNLOAD_SIZE:
            data, size = None, file_size
            duration = max(1, size // _OPUS_BYTES_PER_SECOND)
        else:
            duration = max(1, len(transcript.split()) // 2)
        stored = StoredFile(
            f"sbx-voice-{number}", f"sbxv{number}", f"voice/file_{number}.oga", size, data
        )
        self._by_id[stored.file_id] = stored
        self._by_path[stored.file_path] = stored
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": size,
        }

    def get_file(self, file_id: str) -> Json:
        """``getFile``'s ``File`` object; raises :class:`UnknownFile` or :class:`FileTooBig`."""
        stored = self._by_id.get(file_id)
        if stored is None:
            raise UnknownFile(file_id)
        if stored.data is None:
            raise FileTooBig(file_id)
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    def content(self, file_path: str) -> bytes | None:
        """The bytes served at ``/file/bot<token>/<file_path>``; None when there are none."""
        stored = self._by_path.get(file_path)
        return None if stored is None else stored.data

    def __len__(self) -> int:
        return len(self._by_id)
