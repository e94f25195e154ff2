from recsvc.cli import main

raise SystemExit(main())
