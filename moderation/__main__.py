"""``python -m moderation`` is the ``moderation`` command."""

import sys

from moderation.cli import main

sys.exit(main())
