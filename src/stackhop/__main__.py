"""``python -m stackhop``: the same as the ``stackhop`` command."""

from stackhop.cli.main import main

raise SystemExit(main())
