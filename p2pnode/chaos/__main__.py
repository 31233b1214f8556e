"""`python -m p2pnode.chaos`: the chaos harness's command line."""

import sys

from p2pnode.chaos.cli import main

sys.exit(main())
