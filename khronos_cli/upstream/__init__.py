"""Clients for the services khronos calls (Telegram, Anthropic, OpenAI) and injected outages."""
