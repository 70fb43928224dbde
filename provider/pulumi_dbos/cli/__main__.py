"""`python -m pulumi_dbos.cli`."""

import sys

from . import main

sys.exit(main())
