from docscore.cli import main

raise SystemExit(main())
