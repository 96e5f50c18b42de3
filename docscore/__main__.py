"""`python -m docscore`: the same command line as `docscore`."""

from docscore.cli import main

raise SystemExit(main())
