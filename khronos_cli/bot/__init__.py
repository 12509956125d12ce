"""The bot: the only code that knows both Telegram and the LLMs, and its SQLite store."""
