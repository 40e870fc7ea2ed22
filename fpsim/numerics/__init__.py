"""The numerics layer: formats and modes, the public array API (quantize / encode / decode, the
elementwise ops, matmul under an accumulation model), event statistics, and the one dispatch
table (:mod:`fpsim.numerics.backend`) that hands arrays to the CPU or CUDA kernels."""
