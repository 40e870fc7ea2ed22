"""``python -m fpsim.validate ...`` is ``fpsim validate ...``."""

import sys

from fpsim.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["validate", *sys.argv[1:]]))
