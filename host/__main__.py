"""`python -m host`: the host pipeline's command line."""

from host.cli import main

raise SystemExit(main())
