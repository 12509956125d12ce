"""Alerts to the operator: Telegram chats (through the outbox) and an optional webhook.

:mod:`.grouping` turns events into one line per subject and window; :mod:`.engine` is the worker's
side (events in, messages out through the outbox at bulk priority); :mod:`.direct` is the
supervisor's (one Bot API call, standard library only, for a crash loop while no worker runs).
"""
