"""``python -m golem_api …`` is the ``golem-api`` command."""

import sys

from golem_api._cli import main

sys.exit(main())
