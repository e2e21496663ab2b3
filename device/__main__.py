"""``python -m device``: see ``device.cli``."""

import sys

from device.cli import main

sys.exit(main())
