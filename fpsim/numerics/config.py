"""Tunables, as module constants so tests can patch them."""

#: Chunks per thread in the parallel drivers (more chunks balance uneven work).
CHUNKS_PER_THREAD = 4
#: Smallest number of elements per chunk (below this, fewer chunks are used).
MIN_CHUNK = 1 << 14
#: Arrays with fewer elements are quantized by the serial driver (no thread pool: see
#: kernels/cpu.py, the serial twins).
SERIAL_BELOW = 1 << 16
#: Elements per step when integer (and float16, bool, ml_dtypes) inputs are widened to the
#: float64 carrier: the widening writes into the result array chunk by chunk, so the extra
#: memory is a few chunks instead of a full float64 copy (2^16: 512 KiB per chunk).
CONVERT_CHUNK = 1 << 16
