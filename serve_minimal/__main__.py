"""``python -m serve_minimal PATH [--host …] [--port …]`` — the same as ``invoker-pack serve``."""

import sys

from serve_minimal.run import main

sys.exit(main())
