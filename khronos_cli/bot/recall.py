"""The recent turns of the chats seen lately, kept in memory: what ``Store.history`` would read.

Every text message the bot answers needs its chat's history, and the answer then adds two turns
to it, so reading the history back from SQLite for every update (a query on the store's one
thread, and a hop there and back) was about a tenth of the bot's CPU per update. The store keeps
a copy here instead, and the copy never disagrees with the file:

- a chat's turns are kept only from a read of the file that no write to that chat overlapped
  (a write that starts while the read is out voids its ticket);
- a write that adds turns appends them here once its transaction has committed, in commit order;
  one that fails forgets the chat; while any write to a chat is in flight, its history is read
  from the file;
- ``/reset`` and a group's move to a supergroup forget the chats they touch; ``prune`` forgets
  everything (and voids every read that overlapped it).

It is bounded: at most ``max_chats`` chats and ``budget`` characters of text, the chats heard
from least recently going first. Only the store writes turns, so the copy needs no other signal.
"""

from __future__ import annotations

import contextlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from khronos_cli.bot.schema import Turn

__all__ = ["Recall"]


@dataclass
class _Chat:
    turns: list[Turn] = field(default_factory=list)
    complete: bool = False  # these are all the chat's turns (else only its most recent ones)
    size: int = 0  # characters of text held


class Recall:
    """A bounded, write-through copy of each recent chat's last turns (see the module)."""

    def __init__(self, *, max_chats: int = 10_000, budget: int = 4_000_000) -> None:
        self.max_chats = max_chats
        self.budget = budget
        self.hits = 0
        self.misses = 0
        self._chats: OrderedDict[int, _Chat] = OrderedDict()
        self._size = 0
        self._depth = 0  # the most turns asked for: what each chat keeps
        self._writing: Counter[int] = Counter()  # chat -> writes in flight
        self._pruning = 0  # writes in flight that touch every chat
        self._reads: dict[int, object] = {}  # chat -> the ticket of the read that may fill it

    def get(self, chat_id: int, limit: int) -> list[Turn] | None:
        """The chat's last ``limit`` turns, oldest first, or None when the file must be read."""
        self._depth = max(self._depth, limit)
        chat = self._chats.get(chat_id)
        if chat is None or self._writing[chat_id] or self._pruning:
            self.misses += 1
            return None
        if len(chat.turns) < limit and not chat.complete:
            self.misses += 1
            return None
        self._chats.move_to_end(chat_id)
        self.hits += 1
        return chat.turns[-limit:] if limit > 0 else []

    def ticket(self, chat_id: int) -> object | None:
        """Taken before reading the chat's history from the file: what lets :meth:`fill` keep it
        (None: a write is in flight, so what the read sees may be about to change)."""
        if self._writing[chat_id] or self._pruning:
            return None
        ticket = self._reads[chat_id] = object()
        return ticket

    def fill(self, chat_id: int, ticket: object | None, turns: list[Turn], limit: int) -> None:
        """Keep what a read with ``ticket`` found (``limit`` asked) unless a write overlapped."""
        if ticket is None or self._reads.get(chat_id) is not ticket:
            return
        del self._reads[chat_id]
        self._drop(chat_id)
        chat = _Chat(list(turns), complete=len(turns) < limit)
        self._keep(chat_id, chat)

    def release(self, chat_id: int, ticket: object | None) -> None:
        """The read with ``ticket`` failed: nothing to keep."""
        if ticket is not None and self._reads.get(chat_id) is ticket:
            del self._reads[chat_id]

    @contextlib.contextmanager
    def writing(self, chats: Iterable[int] = (), *, everything: bool = False) -> Iterator[None]:
        """Around a write to ``chats``' turns (or to every chat's): reads meanwhile go to the
        file and none that overlapped is kept; a failed write forgets what it touched."""
        touched = list(chats)
        for chat_id in touched:
            self._writing[chat_id] += 1
            self._reads.pop(chat_id, None)
        if everything:
            self._pruning += 1
            self.forget_all()
        try:
            yield
        except BaseException:
            for chat_id in touched:
                self._drop(chat_id)
            raise
        finally:
            for chat_id in touched:
                self._writing[chat_id] -= 1
                if not self._writing[chat_id]:
                    del self._writing[chat_id]
            if everything:
                self._pruning -= 1
                self.forget_all()

    def append(self, chat_id: int, turns: list[Turn]) -> None:
        """A committed write added ``turns`` to the chat (call it inside :meth:`writing`)."""
        chat = self._chats.get(chat_id)
        if chat is None or not turns:
            return
        self._drop(chat_id)
        chat.turns.extend(turns)
        if len(chat.turns) > self._depth:
            del chat.turns[: len(chat.turns) - self._depth]
            chat.complete = False
        self._keep(chat_id, chat)

    def forget(self, *chat_ids: int) -> None:
        """What these chats' turns were is no longer known here (a reset, a migration)."""
        for chat_id in chat_ids:
            self._drop(chat_id)

    def forget_all(self) -> None:
        self._chats.clear()
        self._reads.clear()
        self._size = 0

    def _keep(self, chat_id: int, chat: _Chat) -> None:
        chat.size = sum(len(turn.text) for turn in chat.turns)
        if chat.size > self.budget:
            return
        self._chats[chat_id] = chat
        self._size += chat.size
        while self._size > self.budget or len(self._chats) > self.max_chats:
            _, oldest = self._chats.popitem(last=False)
            self._size -= oldest.size

    def _drop(self, chat_id: int) -> None:
        chat = self._chats.pop(chat_id, None)
        if chat is not None:
            self._size -= chat.size
