"""``python -m onecycle ...`` is the ``onecycle`` command."""

from onecycle.cli import main

raise SystemExit(main())
