"""Backups of ``khronos.db``: taking a consistent copy (:mod:`.copy`), the copies in a backup
directory (:mod:`.catalog`) and putting one back (:mod:`.restore`).

Standard library only (``sqlite3`` is imported when a command runs, never at import): the worker
takes its scheduled and requested copies with it, and the CLI takes one itself when no instance
runs, lists them and restores them.
"""
