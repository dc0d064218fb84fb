"""``python -m keyring_types``: the same as the ``ktctl`` command."""

from keyring_types.cli import console_main

if __name__ == "__main__":
    console_main()
