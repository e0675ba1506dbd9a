"""python -m tools.wsload: the websocket load test (see tools/wsload/README.md)."""

import sys

from tools.wsload import main

sys.exit(main())
