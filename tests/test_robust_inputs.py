"""Bad input to the training side (dataset files, model configs, training configs, the
``fpsim train`` command line) gives a clear ValueError/TypeError or a one-line CLI error,
never a traceback, a hang, a silently wrong result, or an empty run-record database."""

import gzip
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from fpsim.training import data
from fpsim.training.data import load

# ---------------------------------------------------------------------------- MNIST files


def _idx(array, magic):
    array = np.asarray(array, dtype=np.uint8)
    return (struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
            + array.tobytes())


def _write_mnist(path, train=(5, 3, 4), test=(2, 3, 4)):
    """MNIST files with `train` / `test` image dims (labels all 1)."""
    for prefix, dims in (("train", train), ("t10k", test)):
        (path / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(np.zeros(dims, np.uint8), 0x803))
        (path / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.ones(dims[0], np.uint8), 0x801))


def _gzip_stream(parts, path):
    """Write the concatenation of the byte strings and zero-run lengths in `parts` gzipped to
    `path`, streaming (the uncompressed data never exists in memory)."""
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        for part in parts:
            if isinstance(part, bytes):
                f.write(part)
                continue
            for _ in range(part >> 20):
                f.write(zeros)


def _peak_bytes(fn):
    """(exception raised by fn(), the peak traced Python allocation in bytes while it ran)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            fn()
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


_BOMB = 200 << 20  # 200 MB of zeros: about 200 KB gzipped


@pytest.mark.parametrize("header, message", [
    (b"", "bad IDX magic 0x00000000"),                                  # no header at all
    (struct.pack(">IIII", 0x803, 10, 28, 28), "trailing bytes"),        # valid header, then zeros
])
def test_mnist_gzip_bomb_is_refused_with_bounded_memory(tmp_path, header, message):
    _write_mnist(tmp_path)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_stream([header, _BOMB], bomb)
    assert bomb.stat().st_size < 2 << 20
    (tmp_path / "train-images-idx3-ubyte").unlink()
    error, peak = _peak_bytes(lambda: load("mnist", path=tmp_path))
    assert message in str(error) and "train-images-idx3-ubyte.gz" in str(error)
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB while refusing a 200 MB gzip bomb"


def test_mnist_header_beyond_the_size_limit_is_refused_before_reading(tmp_path):
    _write_mnist(tmp_path)
    # 70000 images of 4096 x 4096: 1.2 TB claimed by a 16-byte header.
    (tmp_path / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, 70000,
                                                                   4096, 4096))
    with pytest.raises(ValueError, match=r"header dims \(70000, 4096, 4096\) .* more than"):
        load("mnist", path=tmp_path)


@pytest.mark.parametrize("train, test, message", [
    ((0, 3, 4), (2, 3, 4), "no training examples"),
    ((5, 3, 4), (0, 3, 4), "no test examples"),
    ((5, 0, 0), (2, 0, 0), r"input_shape \(1, 0, 0\) has an axis of length 0"),
])
def test_mnist_empty_splits_and_images_are_refused(tmp_path, train, test, message):
    _write_mnist(tmp_path, train, test)
    with pytest.raises(ValueError, match=message):
        load("mnist", path=tmp_path)


def test_data_path_that_is_a_file_says_so(tmp_path):
    file = tmp_path / "mnist.tar"
    file.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        load("mnist", path=file)


# ---------------------------------------------------------------------------- CIFAR-10 files

_CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_cifar(path, labels_of=lambda i: [i % 10, (i + 1) % 10]):
    for i, name in enumerate(_CIFAR_NAMES):
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels_of(i)}
        (path / name).write_bytes(pickle.dumps(batch))


def test_cifar_labels_that_are_numpy_integers_load(tmp_path):
    _write_cifar(tmp_path, lambda i: [np.int64(i), np.uint8(3)])
    d = load("cifar10", path=tmp_path)
    assert d.y_train.tolist() == [0, 3, 1, 3, 2, 3, 3, 3, 4, 3] and d.y_test.tolist() == [5, 3]


@pytest.mark.parametrize("labels, message", [
    ([1.5, 2], r"labels must be integers, got float64 value 1\.5"),
    ([2 ** 70, 1], r"label 1180591620717411303424 outside 0\.\.9"),
    (np.array([1.0, 2.0]), "labels must be integers, got float64"),
    (["1", 2], "labels must be integers"),
])
def test_cifar_non_integer_or_huge_labels_are_refused(tmp_path, labels, message):
    _write_cifar(tmp_path)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=message) as info:
        load("cifar10", path=tmp_path)
    assert "data_batch_2" in str(info.value)


class _Run:
    """Pickles as a call of os.system: what a malicious batch would contain."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("make_payload", [
    lambda marker: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                 b"labels": [_Run(f"touch {marker}"), 1]}),
    # A numpy scalar whose dtype would hold a Python object: refused like any other object.
    lambda marker: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                 b"labels": np.array([_Run(f"touch {marker}"), 1], object)}),
])
def test_cifar_malicious_pickles_are_still_refused(tmp_path, make_payload):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_1").write_bytes(make_payload(marker))
    with pytest.raises(ValueError, match="refusing to load global"):
        load("cifar10", path=tmp_path)
    assert not marker.exists()


def test_cifar_unpickler_builds_only_integer_numpy_scalars():
    loads = lambda obj: data._ArrayUnpickler(io.BytesIO(pickle.dumps(obj)), encoding="bytes").load()
    assert loads([np.int64(7), np.uint8(2), np.bool_(True)]) == [7, 2, True]
    with pytest.raises(pickle.UnpicklingError, match="numpy scalar of dtype float64"):
        loads([np.float64(1.5)])
