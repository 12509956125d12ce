"""``python -m khronos_cli``: the same as the ``khronos`` command."""

from khronos_cli.cli import main

if __name__ == "__main__":
    main()
