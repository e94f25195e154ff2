from recsvc.cli.main import main

raise SystemExit(main())
