"""`python -m esper_tui` = the `esper-tui` command."""

from esper_tui.cli import main

raise SystemExit(main())
