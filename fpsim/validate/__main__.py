"""``python -m fpsim.validate ...`` is ``fpsim validate ...``."""

from fpsim.validate.quantize import main

raise SystemExit(main())
