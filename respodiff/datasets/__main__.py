"""`python -m respodiff.datasets ...`: see the package docstring."""

import sys

from respodiff.datasets import main

sys.exit(main())
