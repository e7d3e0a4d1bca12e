"""``python -m ctx_memory.cli``: the ``ctx-memory`` command."""

from ctx_memory.cli import main

if __name__ == "__main__":
    main()
