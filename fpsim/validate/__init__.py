"""Validation programs, one module per subject: :mod:`.quantize` (every float32 input against
ml_dtypes / numpy), :mod:`.arith` (SoftFloat and exhaustive small formats against the exact
reference), :mod:`.hardware` (a GPU's own fp16 / bf16 arithmetic against the emulator).

Each subject module has ``add_arguments(parser)`` and ``run(args)``, which
:mod:`fpsim.cli.validate` puts under ``fpsim validate <subject>``, and a program entry ``main``
(``python -m fpsim.validate.<subject>``); ``python -m fpsim.validate`` is ``fpsim validate``.
"""
