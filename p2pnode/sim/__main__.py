"""`python -m p2pnode.sim`: the simulator's command line."""

import sys

from p2pnode.sim.cli import main

sys.exit(main())
