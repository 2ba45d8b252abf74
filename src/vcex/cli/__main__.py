"""``python -m vcex.cli``."""

import sys

from vcex.cli import main

sys.exit(main())
