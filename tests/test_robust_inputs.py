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


# ---------------------------------------------------------------------------- model configs

from fpsim import models  # noqa: E402
from fpsim.training.loop import TrainConfig, train  # noqa: E402


def _build(name, **keys):
    return models.build(name, {"input_shape": (1, 8, 8), "num_classes": 10, **keys})


@pytest.mark.parametrize("name, keys, message", [
    ("mlp", {"hidden": [0]}, r"model_config\.hidden\[0\] must be a positive integer, got 0"),
    ("mlp", {"hidden": 64}, r"model_config\.hidden must be a list of positive integers"),
    ("mlp", {"hidden": [2.5]}, r"model_config\.hidden\[0\] must be a positive integer"),
    ("mlp", {"init_std": float("nan")}, r"model_config\.init_std must be a finite number"),
    ("mlp", {"activation": "swish"}, r"model_config\.activation must be one of"),
    ("cnn", {"channels": [0, 0]}, r"model_config\.channels\[0\] must be a positive integer"),
    ("cnn", {"channels": [8]}, r"model_config\.channels must be a list of 2 positive integers"),
    ("cnn", {"hidden": True}, r"model_config\.hidden must be a positive integer, got True"),
    ("resnet", {"widths": []}, r"model_config\.widths must be a list of positive integers"),
    ("resnet", {"blocks": 0}, r"model_config\.blocks must be a positive integer"),
    ("transformer", {"heads": -1}, r"model_config\.heads must be a positive integer"),
    ("transformer", {"dim": 0}, r"model_config\.dim must be a positive integer"),
])
def test_model_config_values_are_checked_by_name(name, keys, message):
    with pytest.raises(ValueError, match=message):
        _build(name, **keys)


@pytest.mark.parametrize("name, keys", [
    ("mlp", {"hidden": [2 ** 40]}),
    ("cnn", {"hidden": 2 ** 31}),
    ("resnet", {"widths": [2 ** 20]}),
    ("transformer", {"dim": 2 ** 20}),
])
def test_models_beyond_the_parameter_limit_are_refused_before_allocating(name, keys):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"would allocate \d+ parameters, more than "
                                             r"MAX_PARAMETERS = 100000000"):
            _build(name, **keys)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name, keys", [
    ("mlp", {}), ("mlp", {"hidden": [3, 5]}), ("mlp", {"hidden": []}), ("cnn", {}),
    ("cnn", {"channels": [3, 5], "hidden": 7}), ("resnet", {}),
    ("resnet", {"widths": [4, 8, 8], "blocks": 2}), ("transformer", {}),
    ("transformer", {"tokens": 4, "dim": 12, "heads": 3, "depth": 2}),
])
def test_parameter_count_is_what_build_allocates(name, keys):
    config = {"input_shape": (3, 8, 8), "num_classes": 10, **keys}
    model = models.build(name, config)
    assert models._module(name).parameter_count(config) == sum(
        p.data.size for p in model.parameters())


# ---------------------------------------------------------------------------- TrainConfig

@pytest.mark.parametrize("fields, error, message", [
    ({"lr": float("inf")}, ValueError, "lr must be a positive number, got inf"),
    ({"lr": True}, TypeError, r"lr must be a number .*got True \(bool\)"),
    ({"momentum": float("nan")}, ValueError, r"momentum must lie in \[0, 1\), got nan"),
    ({"weight_decay": float("inf")}, ValueError, "weight_decay must be a finite number >= 0"),
    ({"weight_decay": -1e-4}, ValueError, "weight_decay must be a finite number >= 0"),
    ({"loss_weight": 0.0}, ValueError, "loss_weight must be a positive number"),
    ({"epochs": True}, TypeError, r"epochs must be an integer, got True \(bool\)"),
    ({"epochs": 2.0}, TypeError, r"epochs must be an integer, got 2\.0 \(float\)"),
    ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
    ({"checkpoint_every": 2.5}, TypeError, r"checkpoint_every must be an integer, got 2\.5"),
    ({"hist_every": -1}, ValueError, "hist_every must be an integer >= 0, got -1"),
    ({"instrument": "no"}, TypeError, r"instrument must be true or false, got 'no' \(str\)"),
    ({"lca": 1}, TypeError, r"lca must be true or false, got 1 \(int\)"),
    ({"seed": 2 ** 63}, ValueError, r"seed must be an integer in \[0, 2\^63\)"),
    ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\^63\)"),
    ({"name": 3}, TypeError, r"name must be a string, got 3 \(int\)"),
    ({"model": 3}, ValueError, "unknown model 3"),
    ({"dataset": ["digits"]}, ValueError, "unknown dataset"),
    ({"optimizer": 1}, TypeError, "optimizer must be a string"),
    ({"policy": 1.5}, TypeError, "policy must be a preset name, a table"),
    ({"model_config": {"hiden": [16]}}, ValueError,
     "model_config: unknown mlp key.* hiden; mlp takes hidden, activation, init_std"),
    ({"model_config": [16]}, TypeError, "model_config must be a table"),
    ({"model_config": {"seed": 3}}, ValueError, "seed come.* from the dataset"),
    ({"model_config": {"hidden": [0]}}, ValueError, r"model_config\.hidden\[0\]"),
    ({"dataset_options": {"n_trian": 5}}, ValueError, "unknown option.*n_trian"),
    ({"dataset_options": "x"}, TypeError, "dataset_options must be a table"),
    ({"policy": {"overrides": ["x"]}}, ValueError, "overrides must be a table"),
    ({"policy": {"overrides": {"head*": "float16"}}}, ValueError,
     "override 'head\\*' must be a table"),
])
def test_train_config_refuses_bad_fields_by_name(fields, error, message):
    with pytest.raises(error, match=message):
        TrainConfig.from_dict(fields).resolved()


def test_train_config_rejects_at_construction_and_normalizes_numbers():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        TrainConfig(lr=float("nan"))
    c = TrainConfig(lr=np.float32(0.5), epochs=np.int64(3), seed=np.uint8(2), momentum=0)
    assert (type(c.lr), type(c.epochs), type(c.seed), type(c.momentum)) == (float, int, int, float)
    assert TrainConfig(dataset="MNIST1D").resolved().lr == 2e-3  # the mnist1d defaults apply


def test_invalid_config_creates_no_database(tmp_path):
    db = tmp_path / "runs.sqlite"
    for fields in ({"model_config": {"hidden": [2 ** 40]}},
                   {"dataset": "mnist", "dataset_options": {"path": str(tmp_path / "none")}},
                   {"lca": True, "lca_max_bytes": 10}):
        with pytest.raises((ValueError, FileNotFoundError)):
            train(fields, db=db)
        assert not db.exists()


def test_resume_with_a_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="resume continues a run with its recorded config"):
        train({"epochs": 5}, db=tmp_path / "r.sqlite", resume=1)


# ---------------------------------------------------------------------------- fpsim train

from fpsim.cli import main as cli_main  # noqa: E402


def _cli(capsys, *argv):
    rc = cli_main(["train", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("flags, message", [
    (["--lr", "inf"], "lr must be a positive number, got inf"),
    (["--momentum", "nan"], r"momentum must lie in \[0, 1\), got nan"),
    (["--weight-decay", "inf"], "weight_decay must be a finite number >= 0, got inf"),
    (["--seed", str(2 ** 63)], r"seed must be an integer in \[0, 2\^63\)"),
    (["--checkpoint-every", "-3"], "checkpoint_every must be an integer >= 0"),
])
def test_cli_bad_flags_are_one_line_errors_and_create_no_database(tmp_path, capsys, flags,
                                                                   message):
    db = tmp_path / "r.sqlite"
    rc, out, err = _cli(capsys, *flags, "--db", str(db))
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("fpsim train: error: ") and re.search(message, err), err
    assert not db.exists()


import re  # noqa: E402


@pytest.mark.parametrize("toml, message", [
    ("lr = true", r"lr must be a number .*got True \(bool\)"),
    ("epochs = true", r"epochs must be an integer, got True \(bool\)"),
    ('instrument = "no"', r"instrument must be true or false, got 'no' \(str\)"),
    ("checkpoint_every = 2.5", r"checkpoint_every must be an integer, got 2\.5 \(float\)"),
    ("[model_config]\nhiden = [16]", "model_config: unknown mlp key"),
    ("[model_config]\nhidden = [0]", r"model_config\.hidden\[0\] must be a positive integer"),
    ("lr = 0.1\nlr_typo = 3", r"unknown training config key\(s\) \['lr_typo'\]"),
])
def test_cli_toml_type_errors_name_the_field(tmp_path, capsys, toml, message):
    cfg, db = tmp_path / "c.toml", tmp_path / "r.sqlite"
    cfg.write_text(toml + "\n")
    rc, out, err = _cli(capsys, "--config", str(cfg), "--db", str(db))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert str(cfg) in err  # the message says which file
    assert not db.exists()


def test_cli_config_that_is_a_directory(tmp_path, capsys):
    rc, out, err = _cli(capsys, "--config", str(tmp_path), "--db", str(tmp_path / "r.sqlite"))
    assert rc == 2 and "is a directory, not a TOML file" in err and "Traceback" not in err


def test_cli_data_path_that_is_a_file(tmp_path, capsys):
    file = tmp_path / "train-images-idx3-ubyte"
    file.write_bytes(b"")
    rc, out, err = _cli(capsys, "--dataset", "mnist", "--data-path", str(file),
                        "--db", str(tmp_path / "r.sqlite"))
    assert rc == 2 and "is a file, not a directory" in err


@pytest.fixture
def unfinished_run(tmp_path):
    """A database holding run 1 (mlp, 1 epoch, fp32) marked interrupted."""
    from fpsim.training.records import RunDB
    db = tmp_path / "r.sqlite"
    train({"epochs": 1, "batch_size": 512}, db=db)
    with RunDB(db) as rdb:
        rdb.set_status(1, "interrupted")
    return db


@pytest.mark.parametrize("flags, option", [
    (["--epochs", "5"], "--epochs (epochs 5, recorded 1)"),
    (["--policy", "mixed_fp16"], "--policy (policy 'mixed_fp16', recorded 'fp32')"),
    (["--lr", "0.5"], "--lr (lr 0.5, recorded 0.1)"),
    (["--no-instrument"], "--no-instrument (instrument False, recorded True)"),
])
def test_cli_resume_refuses_a_changed_setting_by_name(unfinished_run, capsys, flags, option):
    rc, out, err = _cli(capsys, "--resume", "--db", str(unfinished_run), *flags)
    assert rc == 2 and option in err and "--resume continues run 1" in err, err


def test_cli_resume_accepts_the_recorded_settings(unfinished_run, capsys):
    rc, out, err = _cli(capsys, "--resume", "1", "--db", str(unfinished_run), "--epochs", "1",
                        "--policy", "fp32", "--batch-size", "512", "--json")
    assert rc == 0, err


def test_cli_resume_of_a_missing_database_creates_none(tmp_path, capsys):
    db = tmp_path / "none.sqlite"
    rc, out, err = _cli(capsys, "--resume", "--db", str(db), "--epochs", "5")
    assert rc == 2 and "does not exist" in err and not db.exists()


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_cli_sigint_before_the_loop_exits_130_without_a_traceback(tmp_path, delay):
    """Ctrl-C ``delay`` seconds after ``python -m fpsim train`` starts, or as soon as the
    interpreter has run fpsim's first lines if that comes later (Python's own start-up can take
    longer than 0.3 s on a loaded machine, and before them nothing of fpsim runs).
    The child's -X importtime lines on stderr tell when it got there."""
    import threading
    db = tmp_path / "r.sqlite"
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "fpsim", "train", "--model", "cnn",
         "--epochs", "30", "--no-progress", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, ready = [], threading.Event()

    def read_stderr():
        for line in child.stderr:
            lines.append(line)
            # fpsim._interrupt is fpsim's first import and installs the handler right after;
            # any other fpsim module finishing its import comes after that (waiting for the
            # _interrupt line itself raced with the installation on a loaded machine).
            name = line.rsplit("|", 1)[-1].strip()
            if (line.startswith("import time:") and name.startswith("fpsim")
                    and name != "fpsim._interrupt"):
                ready.set()
        ready.set()  # (the child ended)
    reader = threading.Thread(target=read_stderr)
    reader.start()
    assert ready.wait(120)
    time.sleep(max(0.0, delay - (time.monotonic() - start)))
    child.send_signal(signal.SIGINT)
    out = child.stdout.read()
    child.wait(timeout=120)
    reader.join(timeout=60)
    err = "".join(line for line in lines if not line.startswith("import time:"))
    assert child.returncode == 130, (child.returncode, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err


@pytest.mark.parametrize("orig_argv, argv0, expected", [
    (["python", "-m", "fpsim", "train"], "-m", True),
    (["python", "-X", "importtime", "-mfpsim"], "-m", True),
    (["/venv/bin/python", "/venv/bin/fpsim", "train"], "/venv/bin/fpsim", True),
    (["python", "-m", "fpsim.validate"], "-m", False),   # another command: its own handling
    (["python", "-c", "import fpsim", "-m", "fpsim"], "-c", False),
    (["python", "-m", "pytest"], "/venv/bin/pytest", False),
])
def test_only_the_fpsim_command_gets_the_start_up_interrupt_handler(monkeypatch, orig_argv,
                                                                    argv0, expected):
    from fpsim import _interrupt
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert _interrupt.started_as_command() is expected


# ---- on/off arguments of the numeric API ------------------------------------------
import fpsim  # noqa: E402


@pytest.mark.parametrize("call", [
    lambda v: fpsim.quantize([1.0], "fp16", stats=v),
    lambda v: fpsim.quantize([1.0], "q2.5", stats=v),
    lambda v: fpsim.add([1.0], [2.0], "fp16", stats=v),
    lambda v: fpsim.add([1.0], [2.0], "fp16", flags=v),
], ids=["quantize-stats", "fixed-quantize-stats", "add-stats", "add-flags"])
@pytest.mark.parametrize("value", ["no", "False", 1, None, [True]])
def test_on_off_arguments_refuse_what_is_not_a_bool(call, value):
    """``stats="no"`` was taken as true (``bool("no")``): an on/off argument is a bool."""
    with pytest.raises(TypeError, match=r"(stats|flags) must be true or false, got"):
        call(value)


def test_on_off_arguments_take_numpy_bools():
    y, st = fpsim.quantize([1.0, 3.0], "fp16", stats=np.bool_(True))
    assert st.exp_hist.sum() == 2
    assert isinstance(fpsim.add([1.0], [2.0], "fp16", flags=np.False_), np.ndarray)
