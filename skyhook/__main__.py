from skyhook.cli import main

raise SystemExit(main())
