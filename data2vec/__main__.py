"""`python -m data2vec` is the same as the `data2vec` command."""

from .cli import main

raise SystemExit(main())
