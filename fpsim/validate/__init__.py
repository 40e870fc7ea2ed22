"""Validation programs, one module per subject: :mod:`.quantize` (every float32 input against
ml_dtypes / numpy), :mod:`.arith` (SoftFloat and exhaustive small formats against the exact
reference), :mod:`.hardware` (a GPU's own fp16 / bf16 arithmetic against the emulator)."""
