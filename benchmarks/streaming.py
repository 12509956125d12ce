"""What reading an answer as a stream costs the client: CPU per answer, beside a whole answer.

Run: ``.venv/bin/python benchmarks/streaming.py [--answers 50]``.

The Anthropic stand-in runs in its own process (``python -m khronos_cli.sandbox``, no latency);
this process measures only its own CPU (``time.process_time``) over ``--answers`` calls of:

- **khronos, streamed**: ``AnthropicClient.reply`` as the bot calls it (``"stream": true``, the
  events folded into an Answer, first-byte and stall limits armed);
- **whole answer (anchor)**: the same httpx client and transport POSTing the non-streamed request
  and reading its JSON, which is what the client did before it streamed: the floor.

for a short answer (4 tokens) and a long one (``#long``, cut at 1,024 tokens, ~6 KB), first with
the whole stream sent at once, then with the stand-in pacing tokens 2 ms apart, as a model does
(slower, but each token its own chunk on the wire: the cost of waking for them). Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import sandbox
from khronos_cli.config import Secret
from khronos_cli.upstream.llm import AnthropicClient

TEXTS = {"short": "m1", "1,024 tokens": "conte tudo #long"}


async def cpu_per_answer(base: str, key: str, text: str, answers: int, streamed: bool) -> float:
    """Milliseconds of this process's CPU per answer."""
    from httpx_aiohttp import AiohttpTransport

    turns = [{"role": "user", "content": text}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": turns}
    client = AnthropicClient(Secret(key), base, transport=AiohttpTransport())
    http = client._http  # the client's own httpx client: same headers, transport and pool

    async def one() -> None:
        if streamed:
            await client.reply([{"role": "user", "content": text}])
        else:
            (await http.post("/v1/messages", json=body)).json()

    try:
        for _ in range(3):
            await one()
        start = time.process_time()
        for _ in range(answers):
            await one()
        return (time.process_time() - start) / answers * 1000
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=50)
    options = parser.parse_args()
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="khronos-bench-stream-") as tmp,
        sandbox(Path(tmp), "--llm-latency", "0") as stand_ins,
    ):
        base = str(stand_ins.info["anthropic_base_url"])
        key = stand_ins.env["ANTHROPIC_API_KEY"]
        for pace in (0.0, 0.002):
            httpx.post(f"{base}/_sandbox/mode", json={"token_latency": pace}, timeout=10)
            count = options.answers if pace == 0 else max(3, options.answers // 10)
            for label, text in TEXTS.items():
                whole = asyncio.run(cpu_per_answer(base, key, text, count, streamed=False))
                stream = asyncio.run(cpu_per_answer(base, key, text, count, streamed=True))
                sent = "at once" if pace == 0 else "2 ms a token"
                rows.append(
                    f"| {label} | {sent} | {stream:.2f} ms | {whole:.2f} ms | "
                    f"{stream / whole:.1f}x |"
                )
    print("| answer | tokens sent | khronos, streamed | whole answer (anchor) | ratio |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
