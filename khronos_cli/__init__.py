"""khronos: keeps a Telegram bot that talks to LLM APIs alive when the world around it fails."""

__version__ = "0.1.0"
