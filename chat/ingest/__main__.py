"""``python -m chat.ingest``: see chat/ingest/cli.py."""

import sys

from chat.ingest.cli import main

sys.exit(main())
