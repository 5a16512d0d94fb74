"""`python -m app`: the answer chain's command line (ask, prompts)."""

import sys

from app.cli import main

sys.exit(main())
