"""``python -m deploy.agent`` (from a source checkout; on the device the zipapp's own ``__main__`` runs)."""

import sys

from deploy.agent.main import main

sys.exit(main())
