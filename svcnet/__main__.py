"""``python -m svcnet``: the ``svcnet`` command."""

from svcnet.cli.main import main

if __name__ == "__main__":
    main()
