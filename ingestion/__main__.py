"""`python -m ingestion`: add, list and delete documents."""

import sys

from ingestion.cli import main

sys.exit(main())
