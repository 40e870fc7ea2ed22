"""The slow, exact oracles: rounding with Python ints and Fractions (:mod:`.rounding`), the
correctly rounded arithmetic with IEEE flags (:mod:`.arith`), the accumulation models
(:mod:`.accumulate`) and hand-derived numpy networks (:mod:`.nets`). They share no code with the
kernels. ``fpsim.reference.round_value`` and the other rounding functions are re-exported here."""

from fpsim.reference.rounding import (SR_BITS_MAX, code_of_value, decode_code, encode_value,
                                     events, max_finite, neighbours, overflow_value, quantize,
                                     round_rational, round_value, round_with_events,
                                     smallest_positive)

__all__ = ["SR_BITS_MAX", "code_of_value", "decode_code", "encode_value", "events", "max_finite",
           "neighbours", "overflow_value", "quantize", "round_rational", "round_value",
           "round_with_events", "smallest_positive"]
