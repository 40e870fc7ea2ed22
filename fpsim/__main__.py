"""``python -m fpsim ...`` runs the ``fpsim`` command line (:func:`fpsim.cli.main`)."""

from fpsim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
