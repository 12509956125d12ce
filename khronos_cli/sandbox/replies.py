"""What the LLM stand-ins answer: the echo, and the other shapes a real answer can take.

A reply is chosen deterministically from the last user message. Without a *directive word* it is
the echo, ``"<provider> echo: <text>"``: an echo of a long message is simply long (a 4,090-character
message gives a reply over 4,096 characters). A directive word anywhere in the message (a
``#hashtag``, first one wins) asks for another shape:

=========  =======================================================================================
``#long``  the echo, then ~1,500 tokens more in paragraphs (blank-line separated) of lines and
           words, ~9,000 characters: over Telegram's 4,096, and cut by the request's cap
           (Anthropic ``max_tokens``; OpenAI ``max_completion_tokens``/``max_tokens``) with the
           honest stop reason (``max_tokens`` / ``length``)
``#blocks``  Anthropic: the echo in several ``text`` content blocks (joined, they are the echo),
           preceded by a ``thinking`` block when the request enabled thinking (the only non-text
           block a non-streamed reply without tools can hold); OpenAI: the echo
``#refuse``  Anthropic: ``stop_reason: "refusal"``, empty ``content``, ``stop_details`` of type
           ``refusal`` (the shape documented for Claude 4 refusals, cut before any text);
           OpenAI: ``message.content: null`` with ``message.refusal`` set, ``finish_reason: "stop"``
``#empty``   Anthropic: ``content: []`` with ``stop_reason: "end_turn"``; OpenAI: ``content: ""``
=========  =======================================================================================

Tokens are words (:func:`tokens`), as everywhere in the sandbox: a stable, plausible count, not the
providers' tokenizers. The long text is seeded by the user's text, so it is the same every time.
"""

from __future__ import annotations

import itertools
import random
import re
import zlib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DIRECTIVES",
    "REFUSAL_TEXT",
    "Directive",
    "Reply",
    "cut",
    "plan_reply",
    "split_blocks",
    "tokens",
]

Directive = Literal["long", "blocks", "refuse", "empty"]
DIRECTIVES: tuple[Directive, ...] = ("long", "blocks", "refuse", "empty")
LONG_TOKENS = 1500  # words the long answer adds to the echo
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_BY_NAME: dict[str, Directive] = {name: name for name in DIRECTIVES}
_DIRECTIVE = re.compile(r"(?<![\w#])#(long|blocks|refuse|empty)(?!\w)")
_WORD = re.compile(r"\S+")
_LONG_SOURCE = (  # the long answer's words are drawn from this text
    "o tempo passa devagar quando a gente espera uma resposta longa do modelo "
    "cada parágrafo traz linhas e palavras que somam muitos caracteres para testar "
    "the bot must split this answer into parts before Telegram refuses a message "
    "longer than four thousand ninety six characters counted in code points "
    "uma mensagem em partes chega em ordem e só a primeira responde ao usuário"
)
_VOCABULARY = tuple(_WORD.findall(_LONG_SOURCE))


@dataclass(frozen=True)
class Reply:
    """The planned answer: its shape (None: the plain echo) and its full text, before any cap
    (empty for ``refuse`` and ``empty``)."""

    directive: Directive | None
    text: str


def tokens(text: str) -> int:
    """A token count that is stable and plausible (words), not the provider's tokenizer."""
    return len(text.split())


def directive_of(text: str) -> Directive | None:
    """The first directive word in ``text``, if any."""
    match = _DIRECTIVE.search(text)
    return None if match is None else _BY_NAME[match.group(1)]


def plan_reply(user_text: str, echo: str) -> Reply:
    """What to answer to ``user_text``, whose plain reply is ``echo``."""
    directive = directive_of(user_text)
    if directive in ("refuse", "empty"):
        return Reply(directive, "")
    if directive == "long":
        return Reply(directive, f"{echo}\n\n{_long_text(user_text)}")
    return Reply(directive, echo)


def cut(text: str, limit: int | None) -> tuple[str, bool]:
    """``text`` cut after its first ``limit`` tokens (layout kept), and whether it was cut."""
    if limit is None:
        return text, False
    words = list(_WORD.finditer(text))
    if len(words) <= limit:
        return text, False
    return (text[: words[limit - 1].end()] if limit > 0 else ""), True


def split_blocks(text: str, count: int = 3) -> list[str]:
    """``text`` in up to ``count`` consecutive pieces cut between words; joined, they are
    ``text`` again (as a client joining an answer's text blocks must do)."""
    words = list(_WORD.finditer(text))
    if len(words) < 2:
        return [text]
    pieces = min(count, len(words))
    starts = [words[len(words) * i // pieces].start() for i in range(1, pieces)]
    bounds = [0, *starts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _long_text(seed: str) -> str:
    """~:data:`LONG_TOKENS` words in paragraphs of lines, the same for the same ``seed``."""
    rng = random.Random(zlib.crc32(seed.encode("utf-8")))
    paragraphs: list[str] = []
    left = LONG_TOKENS
    while left > 0:
        lines: list[str] = []
        for _ in range(rng.randint(4, 7)):
            size = min(left, rng.randint(12, 20))
            if size <= 0:
                break
            words = [rng.choice(_VOCABULARY) for _ in range(size)]
            lines.append(" ".join(words).capitalize() + ".")
            left -= size
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)
