"""Offline datasets for low-precision training experiments.

Everything here works without a network connection:

* ``digits`` (the default): the real 8x8 handwritten digits shipped in
  ``fpsim/datasets/digits.npz`` (see the README there for source and licence).
* ``mnist1d``: generated locally after Greydanus' MNIST-1D.
* ``synthetic-classification`` / ``synthetic-regression``: Gaussian data whose
  magnitude is set by ``input_scale`` (and ``target_scale``), the knob for
  studying small gradients.
* ``mnist`` / ``cifar10``: readers for the standard files in a local directory.

All inputs are float32, C-contiguous, shaped ``(N, *input_shape)`` with images
channels-first; labels are int64. Every random choice comes from
``np.random.default_rng(seed)``, so a dataset is a pure function of its name,
seed and options.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import math
import numbers
import os
import pickle
import zlib

import numpy as np

DATASETS = ("digits", "mnist1d", "synthetic-classification", "synthetic-regression", "mnist", "cifar10")

#: Options accepted by each dataset, with their defaults.
_DEFAULTS = {
    "digits": {"test_fraction": 0.2},
    "mnist1d": {"n_train": 4000, "n_test": 1000},
    "synthetic-classification": {"n_features": 20, "num_classes": 4, "n_train": 1000, "n_test": 200,
                                 "input_scale": 1.0, "class_sep": 4.0},
    "synthetic-regression": {"n_features": 20, "n_targets": 1, "n_train": 1000, "n_test": 200,
                             "input_scale": 1.0, "target_scale": 1.0, "noise": 0.1},
    "mnist": {},
    "cifar10": {},
}
_POSITIVE_INTS = {"n_train", "n_test", "n_features", "num_classes", "n_targets"}
_POSITIVE_FLOATS = {"input_scale", "target_scale"}
_NONNEGATIVE_FLOATS = {"class_sep", "noise"}

_DIGITS_ATTRIBUTION = (
    "E. Alpaydin, C. Kaynak, \"Optical Recognition of Handwritten Digits\", UCI Machine Learning "
    "Repository, 1998, DOI 10.24432/C50P49. Licence: CC BY 4.0. Copy distributed with "
    "scikit-learn (BSD-3-Clause).")
_MNIST1D_ATTRIBUTION = (
    "Generated locally after S. Greydanus, \"Scaling down deep learning\", arXiv:2011.14439, 2020 "
    "(github.com/greydanus/mnist1d, Apache-2.0): templates and transformation parameters from that work.")
_MNIST_ATTRIBUTION = "Y. LeCun, C. Cortes, C. J. C. Burges, \"The MNIST database of handwritten digits\"."
_CIFAR10_ATTRIBUTION = "A. Krizhevsky, \"Learning Multiple Layers of Features from Tiny Images\", 2009."


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held in memory.

    Attributes:
        name: Dataset name as accepted by :func:`load`.
        x_train: float32 inputs, shape ``(N_train, *input_shape)``, C-contiguous.
        y_train: int64 class labels ``(N_train,)`` for classification, float32
            targets ``(N_train, num_classes)`` for regression.
        x_test: Test inputs, like ``x_train``.
        y_test: Test labels/targets, like ``y_train``.
        task: ``"classification"`` or ``"regression"``.
        num_classes: Number of classes (classification) or of targets (regression).
        input_shape: Per-example input shape, e.g. ``(1, 8, 8)`` (channels first).
        attribution: Source and licence text; ``""`` for purely synthetic data.

    Construction checks that each split holds at least one example, that inputs
    and labels have matching counts, that the inputs have ``input_shape`` (no
    axis of length 0), that class labels lie in ``[0, num_classes)`` and that
    nothing is NaN or infinite (``ValueError`` otherwise).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int
    input_shape: tuple
    attribution: str = ""

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise ValueError(f"{self.name}: task must be 'classification' or 'regression', got {self.task!r}")
        if 0 in tuple(self.input_shape):
            raise ValueError(f"{self.name}: input_shape {tuple(self.input_shape)} has an axis "
                             "of length 0")
        for split, label in (("train", "training"), ("test", "test")):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not len(x):  # (an empty training set trains 0 steps; an empty test set has no mean)
                raise ValueError(f"{self.name}: no {label} examples")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: x_{split} has {len(x)} examples but y_{split} has {len(y)}")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"{self.name}: x_{split} has per-example shape {tuple(x.shape[1:])}, "
                                 f"expected input_shape {tuple(self.input_shape)}")
            check_finite(x, f"{self.name} x_{split}")
            check_finite(y, f"{self.name} y_{split}")
            if self.task == "classification" and len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{self.name}: y_{split} has labels outside 0..{self.num_classes - 1}")


def check_finite(x, what: str = "array"):
    """Reject NaN and infinite values.

    Args:
        x: Numeric array (or anything ``np.asarray`` accepts). Integer and bool
            arrays are always finite.
        what: Name of the data, used in the error message.

    Returns:
        ``x`` unchanged, so the call can be used inline.

    Raises:
        ValueError: If ``x`` contains NaN or +-Inf; the message gives the kind
            and the (row-major) index of the first bad value and the count.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        return x
    bad = ~np.isfinite(a)
    if bad.any():
        flat = int(np.argmax(bad.ravel()))
        index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
        kind = "NaN" if np.isnan(a.ravel()[flat]) else "Inf"
        raise ValueError(f"{what} contains {kind} at index {index} "
                         f"(first of {int(bad.sum())} non-finite values)")
    return x


def dataset_key(name) -> str:
    """The :data:`DATASETS` entry ``name`` stands for (case-insensitive; ``_`` may stand for
    ``-``).

    Raises:
        ValueError: not a dataset name.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _DEFAULTS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return key


def check_options(name, options) -> None:
    """Check the options of dataset ``name`` as :func:`load` takes them (``path`` included)
    without loading anything: unknown options and bad values are refused; whether ``path``
    exists is left to :func:`load`.

    Raises:
        ValueError / TypeError: naming the option.
    """
    key = dataset_key(name)
    if not isinstance(options, dict):
        raise TypeError(f"dataset_options must be a table (dict), got {type(options).__name__}")
    options = dict(options)
    path = options.pop("path", None)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{key}: path must be a directory name, got {type(path).__name__}")
    if path is not None and key not in ("mnist", "cifar10"):
        raise ValueError(f"{key}: path is only used by mnist and cifar10")
    _options(key, options)


def load(name: str, *, seed: int = 0, path: str | os.PathLike | None = None, **options) -> Dataset:
    """Load or generate a dataset.

    Args:
        name: One of :data:`DATASETS` (case-insensitive; ``_`` may stand for ``-``).
        seed: Non-negative integer seeding every random choice (split, noise,
            generated examples). Same name, seed and options give identical
            arrays. Ignored by ``mnist`` and ``cifar10``, whose split is fixed.
        path: Directory holding the files for ``mnist`` (IDX files, optionally
            ``.gz``) or ``cifar10`` (python batches, or the directory containing
            ``cifar-10-batches-py``). Not accepted by the other datasets.
        **options: Dataset-specific options (defaults in brackets):

            * ``digits``: ``test_fraction`` (0.2), fraction of the 1797 images held out.
            * ``mnist1d``: ``n_train`` (4000), ``n_test`` (1000).
            * ``synthetic-classification``: ``n_features`` (20), ``num_classes`` (4),
              ``n_train`` (1000), ``n_test`` (200), ``input_scale`` (1.0) multiplying the
              inputs, ``class_sep`` (4.0) typical distance between class means in
              units of the within-class standard deviation (before scaling).
            * ``synthetic-regression``: ``n_features`` (20), ``n_targets`` (1), ``n_train``
              (1000), ``n_test`` (200), ``input_scale`` (1.0) the input standard
              deviation, ``target_scale`` (1.0) the scale of the targets, ``noise`` (0.1)
              target noise relative to the signal.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: Unknown name or option, invalid option value, unexpected or
            missing ``path``, corrupt files.
        FileNotFoundError: ``path`` or one of the expected files does not exist.
    """
    key = dataset_key(name)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    opts = _options(key, options)
    if key in ("mnist", "cifar10"):
        if path is None:
            raise ValueError(f"{key}: path is required (the directory holding the {key} files)")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{key}: path must be a directory name, got {type(path).__name__}")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{key}: path {os.fspath(path)!r} is a file, not a directory "
                             f"(give the directory holding the {key} files)")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{key}: directory {os.fspath(path)!r} does not exist")
        return _load_mnist(os.fspath(path)) if key == "mnist" else _load_cifar10(os.fspath(path))
    if path is not None:
        raise ValueError(f"{key}: path is only used by mnist and cifar10")
    rng = np.random.default_rng(seed)
    loader = {"digits": _load_digits, "mnist1d": _make_mnist1d,
              "synthetic-classification": _make_classification, "synthetic-regression": _make_regression}[key]
    return loader(rng, **opts)


def batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """Index arrays of the minibatches of one epoch.

    The order is a pure function of ``(seed, epoch)``
    (``np.random.default_rng([seed, epoch]).permutation(n)``), so a run resumed
    in the middle of an epoch sees exactly the batches it would have seen.

    Args:
        n: Number of examples (>= 0).
        batch_size: Examples per batch (> 0); the last batch may be smaller.
        seed: Non-negative integer, e.g. the run's seed.
        epoch: Non-negative epoch number.
        shuffle: If False, batches follow ``0..n-1`` in order.

    Returns:
        List of ``ceil(n / batch_size)`` int64 index arrays that together hold
        every index in ``range(n)`` exactly once.
    """
    for arg, value, low in (("n", n, 0), ("batch_size", batch_size, 1), ("seed", seed, 0),
                            ("epoch", epoch, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"batches: {arg} must be an integer >= {low}, got {value!r}")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    order = order.astype(np.int64)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


# ---------------------------------------------------------------------------- options

def _options(key, options):
    defaults = _DEFAULTS[key]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise ValueError(f"{key}: unknown option(s) {', '.join(unknown)}; allowed options: {allowed}")
    opts = {**defaults, **options}
    for opt, value in opts.items():
        if opt in _POSITIVE_INTS:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{key}: {opt} must be a positive integer, got {value!r}")
            opts[opt] = int(value)
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{key}: {opt} must be a finite number, got {value!r}")
        if opt == "test_fraction" and not 0 < value < 1:
            raise ValueError(f"{key}: test_fraction must lie strictly between 0 and 1, got {value!r}")
        if opt in _POSITIVE_FLOATS and value <= 0:
            raise ValueError(f"{key}: {opt} must be > 0, got {value!r}")
        if opt in _NONNEGATIVE_FLOATS and value < 0:
            raise ValueError(f"{key}: {opt} must be >= 0, got {value!r}")
        opts[opt] = float(value)
    if key == "synthetic-classification" and opts["num_classes"] < 2:
        raise ValueError(f"{key}: num_classes must be >= 2, got {opts['num_classes']}")
    return opts


def _f32(x):
    """float32, C-contiguous copy; values beyond the float32 range become +-Inf (caught by Dataset)."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(x, dtype=np.float32)


def _balanced_labels(rng, n, num_classes):
    """n labels with class counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


# ---------------------------------------------------------------------------- digits

def _digits_raw():
    """The shipped digits in file order: uint8 images (1797, 8, 8) in 0..16, uint8 labels (1797,)."""
    with importlib.resources.files("fpsim").joinpath("datasets", "digits.npz").open("rb") as f:
        with np.load(f) as npz:
            return npz["images"], npz["labels"]


def _load_digits(rng, test_fraction):
    images, labels = _digits_raw()
    n = len(labels)
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise ValueError(f"digits: test_fraction={test_fraction} leaves an empty train or test set")
    perm = rng.permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    x = images[:, None].astype(np.float32) / np.float32(16)  # pixels 0..16 -> [0, 1]
    y = labels.astype(np.int64)
    return Dataset("digits", _f32(x[train]), y[train], _f32(x[test]), y[test],
                   "classification", 10, (1, 8, 8), _DIGITS_ATTRIBUTION)


# ---------------------------------------------------------------------------- mnist1d

# One-dimensional digit templates of Greydanus' MNIST-1D (12 samples each, rows = digits 0..9).
_MNIST1D_TEMPLATES = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
])
# Transformation parameters of the original generator.
_M1D_PADDING = (36, 60)        # zeros appended to the template: uniform integer in [36, 60]
_M1D_SCALE_COEFF = 0.4         # amplitude factor uniform in [0.8, 1.2]
_M1D_MAX_TRANSLATION = 48      # circular shift uniform in [0, 48)
_M1D_CORR_NOISE_SCALE = 0.25   # background: Gaussian noise smoothed with sigma = 2 samples
_M1D_IID_NOISE_SCALE = 2e-2
_M1D_SHEAR_SCALE = 0.75        # linear ramp with slope uniform in [-0.375, 0.375]
_M1D_LENGTH = 40


def _mnist1d_templates():
    t = _MNIST1D_TEMPLATES
    t = (t - t.mean(1, keepdims=True)) / t.std(1, keepdims=True)
    return (t - t[:, :1]) / 6.0  # each template starts and ends at 0


def _resample(x, lengths, n_out):
    """Linearly resample row i of x (its first lengths[i] samples) to n_out points over the same span.

    Returns the resampled rows and the fractional source position of every output point.
    """
    pos = np.linspace(0.0, 1.0, n_out)[None, :] * (lengths[:, None] - 1)
    i0 = np.minimum(pos.astype(np.intp), lengths[:, None] - 2)
    frac = pos - i0
    rows = np.arange(len(x))[:, None]
    return x[rows, i0] * (1 - frac) + x[rows, i0 + 1] * frac, pos


def _mnist1d_examples(rng, labels):
    """Transform the templates of `labels` into noisy length-40 signals (float64, un-normalised)."""
    n, t_len = len(labels), _MNIST1D_TEMPLATES.shape[1]
    width = t_len + _M1D_PADDING[1]
    signal = np.zeros((n, width))
    signal[:, :t_len] = _mnist1d_templates()[labels]
    # Pad with a random number of zeros, then stretch back to `width`: random dilation.
    pad = rng.integers(_M1D_PADDING[0], _M1D_PADDING[1] + 1, size=n)
    x, pos = _resample(signal, t_len + pad, width)
    is_template = pos < t_len
    x *= 1 + _M1D_SCALE_COEFF * (rng.random(n)[:, None] - 0.5)
    shift = rng.integers(0, _M1D_MAX_TRANSLATION, size=n)
    rolled = (np.arange(width)[None, :] - shift[:, None]) % width  # np.roll by shift, row-wise
    rows = np.arange(n)[:, None]
    x, is_template = x[rows, rolled], is_template[rows, rolled]
    from scipy.ndimage import gaussian_filter1d  # (only here: the import costs 0.3 s)
    background = gaussian_filter1d(_M1D_CORR_NOISE_SCALE * rng.standard_normal((n, width)), 2, axis=1)
    x = np.where(is_template, x, background)
    x += _M1D_IID_NOISE_SCALE * rng.standard_normal((n, width))
    x -= _M1D_SHEAR_SCALE * (rng.random(n)[:, None] - 0.5) * np.linspace(-0.5, 0.5, width)
    return _resample(x, np.full(n, width), _M1D_LENGTH)[0]


def _make_mnist1d(rng, n_train, n_test):
    y_train, y_test = _balanced_labels(rng, n_train, 10), _balanced_labels(rng, n_test, 10)
    x = _mnist1d_examples(rng, np.concatenate([y_train, y_test]))
    x_train, x_test = x[:n_train], x[n_train:]
    mean, std = x_train.mean(), x_train.std()  # standardise with training statistics
    return Dataset("mnist1d", _f32((x_train - mean) / std)[:, None], y_train,
                   _f32((x_test - mean) / std)[:, None], y_test,
                   "classification", 10, (1, _M1D_LENGTH), _MNIST1D_ATTRIBUTION)


# ---------------------------------------------------------------------------- synthetic

def _make_classification(rng, n_features, num_classes, n_train, n_test, input_scale, class_sep):
    # Means ~ N(0, class_sep^2 / (2 n_features)) per coordinate: about class_sep apart, for any n_features.
    centers = rng.standard_normal((num_classes, n_features)) * (class_sep / math.sqrt(2 * n_features))
    y_train, y_test = _balanced_labels(rng, n_train, num_classes), _balanced_labels(rng, n_test, num_classes)
    y = np.concatenate([y_train, y_test])
    x = input_scale * (centers[y] + rng.standard_normal((len(y), n_features)))
    return Dataset("synthetic-classification", _f32(x[:n_train]), y_train, _f32(x[n_train:]), y_test,
                   "classification", num_classes, (n_features,), "")


def _make_regression(rng, n_features, n_targets, n_train, n_test, input_scale, target_scale, noise):
    n = n_train + n_test
    w = rng.standard_normal((n_features, n_targets)) / math.sqrt(n_features)
    z = rng.standard_normal((n, n_features))
    # x = input_scale * z and y = x @ W_true + noise with W_true = target_scale * w / input_scale.
    y = target_scale * (z @ w + noise * rng.standard_normal((n, n_targets)))
    x = input_scale * z
    return Dataset("synthetic-regression", _f32(x[:n_train]), _f32(y[:n_train]), _f32(x[n_train:]),
                   _f32(y[n_train:]), "regression", n_targets, (n_features,), "")


# ---------------------------------------------------------------------------- files

def _find_file(directory, name, compressed_ok=True):
    for candidate in (name, name + ".gz") if compressed_ok else (name,):
        file = os.path.join(directory, candidate)
        if os.path.isfile(file):
            return file
    suffix = " (or .gz)" if compressed_ok else ""
    raise FileNotFoundError(f"file {name!r}{suffix} not found in {directory!r}")


#: The most data bytes an IDX file may declare (MNIST's largest file holds 47 MB): a header
#: claiming more is refused before anything is read, and a stream is never read past the size
#: its header declares, so a small gzip bomb costs no more memory than an honest file.
MAX_IDX_BYTES = 1 << 30


def _read_idx(file, magic):
    """Array stored in an IDX file (optionally gzipped) whose header must carry `magic` (uint8 data).

    The header is read first; then exactly the bytes its dims declare (at most
    :data:`MAX_IDX_BYTES`) and one more, which must not exist.
    """
    try:
        with (gzip.open if file.endswith(".gz") else open)(file, "rb") as f:
            return _read_idx_stream(f, file, magic)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{file}: cannot read ({e})") from e


def _read_idx_stream(f, file, magic):
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{file}: truncated IDX file ({len(head)} bytes, no header)")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise ValueError(f"{file}: bad IDX magic 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(f"{file}: truncated IDX header ({4 + len(raw_dims)} bytes, "
                         f"need {4 + 4 * ndim})")
    dims = tuple(int.from_bytes(raw_dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    size = math.prod(dims)
    if size > MAX_IDX_BYTES:
        raise ValueError(f"{file}: header dims {dims} declare {size} data bytes, more than "
                         f"the {MAX_IDX_BYTES} an IDX file may hold")
    raw = f.read(size)
    if len(raw) < size:
        raise ValueError(f"{file}: truncated: header dims {dims} need {size} data bytes, "
                         f"file has {len(raw)}")
    if f.read(1):
        raise ValueError(f"{file}: has trailing bytes: header dims {dims} need {size} data bytes")
    return np.frombuffer(raw, np.uint8).reshape(dims)


def _check_labels(file, labels, count, num_classes=10):
    """int64 copy of the class labels read from `file`, checked against the image count and the
    class range; anything but integers (floats, strings, ints beyond int64) is refused."""
    labels = _integer_labels(file, labels, num_classes)
    if len(labels) != count:
        raise ValueError(f"{file}: {len(labels)} labels but the images file holds {count} images")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{file}: negative label {int(labels.min())}")
    if len(labels) and labels.max() >= num_classes:
        raise ValueError(f"{file}: label {int(labels.max())} outside 0..{num_classes - 1}")
    return labels.astype(np.int64)


def _integer_labels(file, labels, num_classes):
    """`labels` as a 1-D integer array. Python ints beyond int64 (an object array) are a range
    error naming the value; floats (1.5 would be truncated), bools and strings are refused."""
    try:
        a = np.asarray(labels).reshape(-1)
    except (ValueError, TypeError) as e:  # ragged or otherwise not array-like
        raise ValueError(f"{file}: labels must be a list of integers ({e})") from None
    if not len(a):  # ([] reads as float64)
        return a.astype(np.int64)
    if a.dtype.kind in "iu":
        return a
    values = a.tolist()
    is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
              for v in values]
    if all(is_int):  # an object array: some value does not fit in int64
        raise ValueError(f"{file}: label {max(values, key=abs)} outside 0..{num_classes - 1}")
    bad = values[is_int.index(False)]
    raise ValueError(f"{file}: labels must be integers, got {a.dtype} value {bad!r}")


def _load_mnist(path):
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_file = _find_file(path, f"{prefix}-images-idx3-ubyte")
        labels_file = _find_file(path, f"{prefix}-labels-idx1-ubyte")
        images = _read_idx(images_file, 0x00000803)
        labels = _check_labels(labels_file, _read_idx(labels_file, 0x00000801), len(images))
        splits[split] = (_f32(images[:, None] / np.float32(255)), labels)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"mnist: train images are {x_train.shape[2:]} "
                         f"but test images are {x_test.shape[2:]}")
    return Dataset("mnist", x_train, y_train, x_test, y_test, "classification", 10,
                   tuple(x_train.shape[1:]), _MNIST_ATTRIBUTION)


# Globals a CIFAR-10 batch may reference (numpy arrays); anything else is refused.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # protocol 2 stores bytes via encode
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
# Labels written as numpy integers (np.int64(3)) pickle as `scalar(dtype, bytes)`.
_PICKLE_SCALARS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


def _integer_scalar(scalar):
    """numpy's scalar reconstructor `scalar` limited to integer and bool dtypes (labels): an
    object dtype would hand back whatever the pickle holds, a float label would be truncated."""
    def build(dtype, *args):
        if not isinstance(dtype, np.dtype) or dtype.kind not in "iub":
            raise pickle.UnpicklingError(f"refusing numpy scalar of dtype {dtype}: "
                                         "labels are integers")
        return scalar(dtype, *args)
    return build


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds only plain containers, numpy arrays and integer numpy scalars."""

    def find_class(self, module, name):
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        if (module, name) in _PICKLE_SCALARS:
            return _integer_scalar(super().find_class(module, name))
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _read_cifar_batch(file):
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) of one CIFAR-10 python batch."""
    try:
        with open(file, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # corrupt pickles raise many exception types
        raise ValueError(f"{file}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{file}: expected a dict with keys b'data' and b'labels', "
                         f"got {type(batch).__name__}")
    data, labels = (batch.get(k, batch.get(k.decode())) for k in (b"data", b"labels"))
    if data is None or labels is None:
        raise ValueError(f"{file}: expected keys b'data' and b'labels', found {sorted(map(repr, batch))}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{file}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    labels = _check_labels(file, labels, len(data))
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    nested = os.path.join(path, "cifar-10-batches-py")
    if not os.path.isfile(os.path.join(path, names[0])) and os.path.isdir(nested):
        path = nested  # the directory the official archive extracts to
    files = [_find_file(path, name, compressed_ok=False) for name in names]
    batches_ = [_read_cifar_batch(file) for file in files]
    x_train = np.concatenate([b[0] for b in batches_[:5]])
    y_train = np.concatenate([b[1] for b in batches_[:5]])
    x_test, y_test = batches_[5]
    x_train, x_test = _f32(x_train / np.float32(255)), _f32(x_test / np.float32(255))
    return Dataset("cifar10", x_train, y_train, x_test, y_test, "classification", 10, (3, 32, 32),
                   _CIFAR10_ATTRIBUTION)
