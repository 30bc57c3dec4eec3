"""``python -m svcnet``: the ``svcnet`` command."""

from svcnet.cli import main

if __name__ == "__main__":
    main()
