from invisible.cli import main

raise SystemExit(main())
