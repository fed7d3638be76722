"""`python -m engine …`: the engine process (thin entry)."""

from engine.launch import main

raise SystemExit(main())
