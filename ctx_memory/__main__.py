"""``python -m ctx_memory``: the ``ctx-memory`` command line."""

from ctx_memory.cli import main

if __name__ == "__main__":
    main()
