"""Every parallel CPU driver equals its serial twin (one thread, one chunk) bit for bit, and does
not depend on how the index range is chunked."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fpsim
from fpsim.numerics import config
from _inputs import random_values

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]


def _serial(fn, monkeypatch):
    saved = numba.get_num_threads()
    with monkeypatch.context() as m:
        m.setattr(config, "MIN_CHUNK", 1 << 62)  # one chunk
        numba.set_num_threads(1)
        try:
            return fn()
        finally:
            numba.set_num_threads(saved)


def _many_chunks(fn, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(config, "MIN_CHUNK", 333)
        m.setattr(config, "CHUNKS_PER_THREAD", 64)
        return fn()


def _serial_driver(fn, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(config, "SERIAL_BELOW", 1 << 62)  # the non-parallel twin driver
        return fn()


def test_quantize_serial_driver_equals_parallel(monkeypatch):
    """The serial drivers used for small arrays (training-step casts) equal the parallel ones;
    they inline the same _quantize, so two modes (one deterministic, one random) on the float32
    carrier of training cover them."""
    x = random_values("float32", 200_001, seed=8)
    for mode in ("rne", "sr"):
        run = lambda: fpsim.quantize(x, "e5m2", mode, seed=3, stats=True)  # noqa: E731
        (y, st) = run()
        y1, st1 = _serial_driver(run, monkeypatch)
        assert np.array_equal(y.view(np.uint8), y1.view(np.uint8)), mode
        assert st == st1, mode


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_quantize_parallel_equals_serial(dtype, monkeypatch):
    x = random_values(dtype, 200_001, seed=8)
    for mode in MODES:
        run = lambda: fpsim.quantize(x, "bf16", mode, seed=3, stats=True)  # noqa: E731
        (y, st) = run()
        for other in (_serial(run, monkeypatch), _many_chunks(run, monkeypatch)):
            assert np.array_equal(y.view(np.uint8), other[0].view(np.uint8)), mode
            assert st == other[1], mode


def test_encode_decode_parallel_equal_serial(monkeypatch):
    x = random_values("float32", 200_001, seed=9)
    for mode in ("rne", "sr"):
        run = lambda: fpsim.encode(x, "e4m3", mode, seed=5)  # noqa: E731
        want = run()
        assert np.array_equal(want, _serial(run, monkeypatch))
        assert np.array_equal(want, _many_chunks(run, monkeypatch))
    codes = np.arange(1 << 16, dtype=np.uint16)
    run = lambda: fpsim.decode(codes, "bf16")  # noqa: E731
    want = run()
    assert np.array_equal(want.view(np.uint64), _serial(run, monkeypatch).view(np.uint64))
    assert np.array_equal(want.view(np.uint64), _many_chunks(run, monkeypatch).view(np.uint64))
