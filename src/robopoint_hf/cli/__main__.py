"""``python -m robopoint_hf.cli`` is the ``robopoint`` command (what ``accelerate launch -m`` and ``torchrun -m`` run)."""

import sys

from . import main

sys.exit(main())
