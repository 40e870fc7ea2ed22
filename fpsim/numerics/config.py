"""Tunables, as module constants so tests can patch them."""

#: Chunks per thread in the parallel drivers (more chunks balance uneven work).
CHUNKS_PER_THREAD = 4
#: Smallest number of elements per chunk (below this, fewer chunks are used).
MIN_CHUNK = 1 << 14
#: Arrays with fewer elements are quantized by the serial driver (no thread pool: see
#: kernels/cpu.py, the serial twins).
SERIAL_BELOW = 1 << 16
#: BLAS calls of the matmul fast path with fewer multiply-adds (M*N*K) run on one BLAS thread.
#: OpenBLAS spreads GEMMs from about 100^3 up; with a busy second core its waiting thread stalls
#: the call (128^3 float32: 43 us on one thread, 20 ms on two, loaded 2-core machine).
BLAS_SERIAL_MACS = 1 << 22

#: The cast sites of a training step round tensors below this size with the serial driver
#: too: there every cast sits between BLAS products, and waking Numba's thread pool for a
#: 64 x 16 x 8 x 8 activation cost more than rounding it (ResNet on digits, mixed_fp16 without
#: Stats: 2.8x the fp32 step with the pool, 1.3x without, on 2 busy cores). Results do not
#: depend on it.
CAST_SERIAL_BELOW = 1 << 20

#: Elements per step when integer (and float16, bool, ml_dtypes) inputs are widened to the
#: float64 carrier: the widening writes into the result array chunk by chunk, so the extra
#: memory is a few chunks instead of a full float64 copy (2^16: 512 KiB per chunk).
CONVERT_CHUNK = 1 << 16
