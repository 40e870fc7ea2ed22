"""Tests for fpsim.data: shipped digits, generated datasets, MNIST/CIFAR-10 readers, batching."""

import gzip
import importlib.resources
import pickle
import struct

import numpy as np
import pytest

from fpsim.training import data
from fpsim.training.data import Dataset, batches, check_finite, load

# ---------------------------------------------------------------------------- digits

# Read from sklearn/datasets/data/digits.csv.gz of the scikit-learn 1.9.1 wheel when the file was converted.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
DIGITS_PIXEL_SUM = 561718
DIGITS_FIRST_ROW = [0, 0, 5, 13, 9, 1, 0, 0]  # row 0 of example 0, a "0" whose pixels sum to 294


def _rows(x, y):
    """Each example as bytes (pixels 0..16 then label), for set/multiset comparisons."""
    pixels = np.rint(x.reshape(len(x), -1) * 16).astype(np.uint8)
    return [p.tobytes() + bytes([label]) for p, label in zip(pixels, y)]


def test_shipped_digits_file_matches_source():
    images, labels = data._digits_raw()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == DIGITS_CLASS_COUNTS
    assert int(images.sum(dtype=np.int64)) == DIGITS_PIXEL_SUM
    assert images[0, 0].tolist() == DIGITS_FIRST_ROW
    assert int(images[0].sum()) == 294 and labels[0] == 0
    assert int(images[-1].sum()) == 392 and labels[-1] == 8
    readme = importlib.resources.files("fpsim").joinpath("datasets", "README.md").read_text()
    assert "10.24432/C50P49" in readme and "CC BY 4.0" in readme


def test_digits_default_split():
    d = load("digits")
    assert d.name == "digits" and d.task == "classification" and d.num_classes == 10
    assert d.input_shape == (1, 8, 8)
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        assert np.array_equal(x * 16, np.rint(x * 16))  # exactly k/16
        assert set(y.tolist()) == set(range(10))
    assert "Alpaydin" in d.attribution and "CC BY 4.0" in d.attribution


def test_digits_split_is_a_partition_of_the_source():
    d = load("digits", seed=3)
    images, labels = data._digits_raw()
    train, test = _rows(d.x_train, d.y_train), _rows(d.x_test, d.y_test)
    full = _rows(images / 16, labels)
    assert len(set(full)) == 1797  # all source examples distinct, so rows identify examples
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(full)
    assert float(d.x_train.sum() + d.x_test.sum()) * 16 == DIGITS_PIXEL_SUM


def test_digits_split_deterministic_per_seed():
    a, b, c = load("digits", seed=7), load("digits", seed=7), load("digits", seed=8)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.y_test, c.y_test)
    assert set(_rows(a.x_test, a.y_test)) != set(_rows(c.x_test, c.y_test))


def test_digits_test_fraction():
    d = load("digits", test_fraction=0.5)
    assert len(d.x_test) == 898 and len(d.x_train) == 899


# ---------------------------------------------------------------------------- mnist1d

def test_mnist1d_shapes_and_balance():
    d = load("mnist1d")
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert d.input_shape == (1, 40) and d.num_classes == 10
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert np.bincount(d.y_train).tolist() == [400] * 10
    assert np.bincount(d.y_test).tolist() == [100] * 10
    assert abs(float(d.x_train.mean())) < 1e-3 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert "Greydanus" in d.attribution


def test_mnist1d_deterministic_and_seed_dependent():
    a = load("mnist1d", seed=1, n_train=300, n_test=55)
    b = load("mnist1d", seed=1, n_train=300, n_test=55)
    c = load("mnist1d", seed=2, n_train=300, n_test=55)
    assert a.x_train.shape == (300, 1, 40) and a.x_test.shape == (55, 1, 40)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.max() - counts.min() <= 1


def test_mnist1d_classes_carry_signal():
    d = load("mnist1d", n_train=1000, n_test=300)
    xt, xs = d.x_train[:, 0], d.x_test[:, 0]
    nearest = ((xs[:, None] - xt[None]) ** 2).sum(-1).argmin(1)
    accuracy = (d.y_train[nearest] == d.y_test).mean()
    assert accuracy > 0.3  # chance is 0.1; the original dataset gives about 0.5-0.6 with 1-NN


# ---------------------------------------------------------------------------- synthetic

def test_synthetic_classification():
    d = load("synthetic-classification", n_features=7, num_classes=3, n_train=90, n_test=30)
    assert d.x_train.shape == (90, 7) and d.x_test.shape == (30, 7) and d.input_shape == (7,)
    assert d.task == "classification" and d.num_classes == 3 and d.attribution == ""
    assert np.bincount(d.y_train).tolist() == [30, 30, 30]
    means = np.stack([d.x_train[d.y_train == k].mean(0) for k in range(3)])
    predicted = ((d.x_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == d.y_test).mean() > 0.8


def test_synthetic_classification_input_scale():
    a = load("synthetic-classification", seed=4)
    b = load("synthetic-classification", seed=4, input_scale=1e-3)
    np.testing.assert_allclose(b.x_train, a.x_train * np.float32(1e-3), rtol=1e-6)
    assert np.array_equal(a.y_train, b.y_train)


def test_synthetic_regression():
    d = load("synthetic-regression", n_features=5, n_targets=3, n_train=400, n_test=100, noise=0.1)
    assert d.task == "regression" and d.num_classes == 3
    assert d.x_train.shape == (400, 5) and d.y_train.shape == (400, 3) and d.y_test.shape == (100, 3)
    assert d.y_train.dtype == np.float32 and d.x_train.dtype == np.float32
    w, *_ = np.linalg.lstsq(d.x_train.astype(np.float64), d.y_train.astype(np.float64), rcond=None)
    residual = d.y_test - d.x_test @ w
    assert residual.var() / d.y_test.var() < 0.05  # linear targets, noise 0.1


def test_synthetic_regression_scales():
    a = load("synthetic-regression", seed=5)
    b = load("synthetic-regression", seed=5, input_scale=0.01, target_scale=100.0)
    np.testing.assert_allclose(b.x_train, a.x_train * np.float32(0.01), rtol=1e-6)
    np.testing.assert_allclose(b.y_train, a.y_train * np.float32(100), rtol=1e-6)


def test_name_normalisation():
    d = load("Synthetic_Classification", n_train=10, n_test=4)
    assert d.name == "synthetic-classification"


# ---------------------------------------------------------------------------- mnist (IDX)

def _idx(array, magic):
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()


def _write(path, name, payload, compress):
    file = path / (name + (".gz" if compress else ""))
    file.write_bytes(gzip.compress(payload) if compress else payload)
    return file


@pytest.fixture
def mnist_arrays():
    rng = np.random.default_rng(0)
    return {"train": (rng.integers(0, 256, (5, 3, 4), dtype=np.uint8), np.array([0, 9, 3, 3, 1], np.uint8)),
            "t10k": (rng.integers(0, 256, (2, 3, 4), dtype=np.uint8), np.array([7, 2], np.uint8))}


def _write_mnist(path, arrays, compress=False):
    for prefix, (images, labels) in arrays.items():
        _write(path, f"{prefix}-images-idx3-ubyte", _idx(images, 0x803), compress)
        _write(path, f"{prefix}-labels-idx1-ubyte", _idx(labels, 0x801), compress)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_round_trip(tmp_path, mnist_arrays, compress):
    _write_mnist(tmp_path, mnist_arrays, compress)
    d = load("mnist", path=str(tmp_path))
    assert d.input_shape == (1, 3, 4) and d.num_classes == 10  # dims from the header
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = mnist_arrays[prefix]
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        assert x.dtype == np.float32 and x.flags.c_contiguous and y.dtype == np.int64
        assert np.array_equal(x, images[:, None].astype(np.float32) / np.float32(255))
        assert np.array_equal(y, labels)
    assert "MNIST" in d.attribution


def test_mnist_missing_path_and_files(tmp_path, mnist_arrays):
    with pytest.raises(ValueError, match="mnist: path is required"):
        load("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("mnist", path=str(tmp_path / "nowhere"))
    _write_mnist(tmp_path, mnist_arrays)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"'t10k-labels-idx1-ubyte' \(or \.gz\) not found"):
        load("mnist", path=tmp_path)


@pytest.mark.parametrize("payload, message", [
    (_idx(np.zeros(5, np.uint8), 0x801), "bad IDX magic 0x00000801, expected 0x00000803"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00", r"truncated IDX header \(10 bytes, need 16\)"),
    (b"\x00\x00", r"truncated IDX file \(2 bytes"),
    (_idx(np.zeros((5, 3, 4), np.uint8), 0x803)[:-7],
     r"truncated: header dims \(5, 3, 4\) need 60 data bytes, file has 53"),
    (_idx(np.zeros((5, 3, 4), np.uint8), 0x803) + b"\x00", "trailing bytes"),
    (b"%PDF-1.4 not an idx file at all", "bad IDX magic 0x25504446"),
])
def test_mnist_corrupt_images_file(tmp_path, mnist_arrays, payload, message):
    _write_mnist(tmp_path, mnist_arrays)
    _write(tmp_path, "train-images-idx3-ubyte", payload, compress=False)
    with pytest.raises(ValueError, match=message) as info:
        load("mnist", path=tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_mnist_corrupt_gzip(tmp_path, mnist_arrays):
    _write_mnist(tmp_path, mnist_arrays, compress=True)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-12])  # truncated stream
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: cannot read"):
        load("mnist", path=tmp_path)
    gz.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        load("mnist", path=tmp_path)


def test_mnist_label_problems(tmp_path, mnist_arrays):
    _write_mnist(tmp_path, mnist_arrays)
    _write(tmp_path, "train-labels-idx1-ubyte", _idx([1, 2, 3], 0x801), compress=False)
    with pytest.raises(ValueError, match="3 labels but the images file holds 5 images"):
        load("mnist", path=tmp_path)
    _write(tmp_path, "train-labels-idx1-ubyte", _idx([1, 2, 3, 4, 10], 0x801), compress=False)
    with pytest.raises(ValueError, match=r"label 10 outside 0\.\.9"):
        load("mnist", path=tmp_path)


def test_mnist_train_test_dims_differ(tmp_path, mnist_arrays):
    mnist_arrays["t10k"] = (np.zeros((2, 4, 4), np.uint8), np.array([1, 2], np.uint8))
    _write_mnist(tmp_path, mnist_arrays)
    with pytest.raises(ValueError, match="train images are"):
        load("mnist", path=tmp_path)


def test_mnist_takes_no_options(tmp_path):
    with pytest.raises(ValueError, match="mnist: unknown option.*allowed options: none"):
        load("mnist", path=tmp_path, n_train=5)


# ---------------------------------------------------------------------------- cifar10

def _short_string(b):
    return b"U" + bytes([len(b)]) + b


def _py2_cifar_pickle(raw, labels):
    """A batch pickled the way the official (Python 2) files are: str keys and a numpy array, protocol 2."""
    n = raw.shape[0]
    dtype = (b"cnumpy\ndtype\n" + _short_string(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
             + _short_string(b"b") + b"\x87R"
             + b"(K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", raw.shape[1]) + b"\x86" + dtype
             + b"\x89T" + struct.pack("<i", raw.nbytes) + raw.tobytes() + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return (b"\x80\x02}(" + _short_string(b"data") + array + _short_string(b"labels") + label_list
            + _short_string(b"batch_label") + _short_string(b"testing") + b"u.")


CIFAR_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _write_cifar(path, protocol=4, keys=(b"data", b"labels")):
    rng = np.random.default_rng(1)
    path.mkdir(parents=True, exist_ok=True)
    contents = {}
    for i, name in enumerate(CIFAR_NAMES):
        n = 3 if name == "test_batch" else 2
        raw = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n)]
        contents[name] = (raw, labels)
        if protocol == "py2":
            payload = _py2_cifar_pickle(raw, labels)
        else:
            payload = pickle.dumps({keys[0]: raw, keys[1]: labels, b"batch_label": b"x"}, protocol=protocol)
        (path / name).write_bytes(payload)
    return contents


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_round_trip(tmp_path, protocol):
    contents = _write_cifar(tmp_path, protocol)
    d = load("cifar10", path=str(tmp_path))
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert d.x_train.shape == (10, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    raw_train = np.concatenate([contents[name][0] for name in CIFAR_NAMES[:5]])
    expected = raw_train.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255)
    assert d.x_train.dtype == np.float32 and np.array_equal(d.x_train, expected)
    assert d.y_train.dtype == np.int64
    assert d.y_train.tolist() == sum((contents[name][1] for name in CIFAR_NAMES[:5]), [])
    assert d.y_test.tolist() == contents["test_batch"][1]
    # channel-first layout: the first 1024 bytes of a row are the red plane
    red = contents["test_batch"][0][0, :1024].astype(np.float32)
    assert np.array_equal(d.x_test[0, 0].ravel() * 255, red)


def test_cifar10_nested_directory_and_str_keys(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py", keys=("data", "labels"))
    assert load("cifar10", path=tmp_path).x_train.shape == (10, 3, 32, 32)


def test_cifar10_missing(tmp_path):
    with pytest.raises(ValueError, match="cifar10: path is required"):
        load("cifar10")
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="'test_batch' not found"):
        load("cifar10", path=tmp_path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _batch(data, labels):
    return pickle.dumps({b"data": data, b"labels": labels})


_U8 = np.zeros((2, 3072), np.uint8)


@pytest.mark.parametrize("make_payload, message", [
    (lambda tmp: b"\x00\x01garbage, not a pickle", "not a readable CIFAR-10 python batch"),
    (lambda tmp: pickle.dumps([1, 2, 3]), "expected a dict with keys b'data' and b'labels', got list"),
    (lambda tmp: pickle.dumps({b"data": _U8}), r"expected keys b'data' and b'labels', found \[\"b'data'\"\]"),
    (lambda tmp: _batch(_U8[:, :100], [1, 2]), r"uint8 of shape \(N, 3072\)"),
    (lambda tmp: _batch(_U8.astype(np.float32), [1, 2]), "uint8 of shape"),
    (lambda tmp: _batch(_U8, [1]), "1 labels but the images file holds 2"),
    (lambda tmp: _batch(_U8, [1, -1]), "negative label -1"),
    (lambda tmp: _batch(_U8, [12, 0]), r"label 12 outside 0\.\.9"),
    (lambda tmp: pickle.dumps(_Evil(str(tmp / "pwned"))), r"refusing to load global io\.open"),
])
def test_cifar10_bad_batches(tmp_path, make_payload, message):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(make_payload(tmp_path))
    with pytest.raises(ValueError, match=message) as info:
        load("cifar10", path=tmp_path)
    assert "data_batch_3" in str(info.value)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------- batches

def test_batches_cover_every_index_once():
    epoch = batches(103, 10, seed=5, epoch=0)
    assert [len(b) for b in epoch] == [10] * 10 + [3]
    assert all(b.dtype == np.int64 for b in epoch)
    assert sorted(np.concatenate(epoch).tolist()) == list(range(103))


def test_batches_pure_function_of_seed_and_epoch():
    a = batches(50, 8, seed=1, epoch=3)
    b = batches(50, 8, seed=1, epoch=3)  # e.g. a run resumed in the middle of epoch 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    order = np.concatenate(a)
    assert not np.array_equal(order, np.concatenate(batches(50, 8, seed=1, epoch=4)))
    assert not np.array_equal(order, np.concatenate(batches(50, 8, seed=2, epoch=3)))
    assert np.array_equal(order, np.random.default_rng([1, 3]).permutation(50))


def test_batches_unshuffled_and_empty():
    assert [b.tolist() for b in batches(5, 2, seed=0, epoch=0, shuffle=False)] == [[0, 1], [2, 3], [4]]
    assert batches(0, 4, seed=0, epoch=0) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"n": -1}, "n must be an integer >= 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_size": 2.0}, "batch_size must be an integer"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"epoch": -1}, "epoch must be an integer >= 0"),
])
def test_batches_errors(kwargs, message):
    args = {"n": 10, "batch_size": 4, "seed": 0, "epoch": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        batches(**args)


# ---------------------------------------------------------------------------- check_finite and Dataset

def test_check_finite():
    x = np.zeros((3, 4), np.float32)
    assert check_finite(x, "x") is x
    x[1, 2], x[2, 0] = np.nan, np.inf
    message = r"weights contains NaN at index \(1, 2\) \(first of 2 non-finite values\)"
    with pytest.raises(ValueError, match=message):
        check_finite(x, "weights")
    with pytest.raises(ValueError, match=r"v contains Inf at index \(4,\)"):
        check_finite([1.0, 2.0, 3.0, 4.0, -np.inf], "v")
    ints = np.arange(4)
    assert check_finite(ints, "ints") is ints


def _dataset(**changes):
    fields = dict(name="toy", x_train=np.zeros((3, 2), np.float32), y_train=np.zeros(3, np.int64),
                  x_test=np.zeros((1, 2), np.float32), y_test=np.zeros(1, np.int64),
                  task="classification", num_classes=2, input_shape=(2,), attribution="")
    return Dataset(**{**fields, **changes})


def test_dataset_invariants():
    _dataset()
    with pytest.raises(ValueError, match="toy: x_train has 3 examples but y_train has 2"):
        _dataset(y_train=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"per-example shape \(2,\), expected input_shape \(3,\)"):
        _dataset(input_shape=(3,))
    with pytest.raises(ValueError, match="task must be"):
        _dataset(task="ranking")
    with pytest.raises(ValueError, match=r"y_test has labels outside 0\.\.1"):
        _dataset(y_test=np.array([2]))
    with pytest.raises(ValueError, match=r"toy x_test contains NaN at index \(0, 1\)"):
        _dataset(x_test=np.array([[0.0, np.nan]], np.float32))


def test_overflowing_input_scale_is_rejected():
    with pytest.raises(ValueError, match="synthetic-classification x_train contains Inf"):
        load("synthetic-classification", input_scale=1e300)


# ---------------------------------------------------------------------------- load() argument errors

@pytest.mark.parametrize("name, kwargs, message", [
    ("imagenet", {}, "unknown dataset 'imagenet'; known datasets: digits, mnist1d, synthetic-classification"),
    (3, {}, "unknown dataset 3"),
    ("digits", {"n_train": 10}, "digits: unknown option.* n_train; allowed options: test_fraction"),
    ("mnist1d", {"n_tarin": 10}, "mnist1d: unknown option.* n_tarin; allowed options: n_test, n_train"),
    ("digits", {"test_fraction": 0.0}, "test_fraction must lie strictly between 0 and 1"),
    ("digits", {"test_fraction": 1.0}, "test_fraction must lie strictly between 0 and 1"),
    ("digits", {"test_fraction": -0.5}, "test_fraction must lie strictly between 0 and 1"),
    ("digits", {"test_fraction": float("nan")}, "test_fraction must be a finite number"),
    ("digits", {"test_fraction": "0.2"}, "test_fraction must be a finite number"),
    ("digits", {"test_fraction": 1e-5}, "leaves an empty train or test set"),
    ("mnist1d", {"n_train": 0}, "mnist1d: n_train must be a positive integer, got 0"),
    ("mnist1d", {"n_test": -5}, "n_test must be a positive integer"),
    ("mnist1d", {"n_test": 2.5}, "n_test must be a positive integer"),
    ("mnist1d", {"n_test": True}, "n_test must be a positive integer"),
    ("synthetic-classification", {"num_classes": 1}, "num_classes must be >= 2"),
    ("synthetic-classification", {"n_features": 0}, "n_features must be a positive integer"),
    ("synthetic-classification", {"input_scale": 0.0}, "input_scale must be > 0"),
    ("synthetic-classification", {"input_scale": float("inf")}, "input_scale must be a finite number"),
    ("synthetic-classification", {"class_sep": -1.0}, "class_sep must be >= 0"),
    ("synthetic-regression", {"target_scale": -2.0}, "target_scale must be > 0"),
    ("synthetic-regression", {"noise": -0.1}, "noise must be >= 0"),
    ("synthetic-regression", {"n_targets": 0}, "n_targets must be a positive integer"),
    ("digits", {"seed": -1}, "seed must be a non-negative integer"),
    ("digits", {"seed": 1.5}, "seed must be a non-negative integer"),
    ("digits", {"path": "/tmp"}, "digits: path is only used by mnist and cifar10"),
])
def test_load_argument_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load(name, **kwargs)


def test_datasets_tuple():
    assert data.DATASETS == ("digits", "mnist1d", "synthetic-classification", "synthetic-regression",
                             "mnist", "cifar10")
