"""Run records under bad conditions: a damaged database, two processes on one database, a
run resumed under other settings, read-only and special locations, a full disk, and crafted
records. Every case ends in a one-line error (or a visible warning) and keeps what was
recorded."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from fpsim import cli
from fpsim.training import loop, records
from fpsim.training.loop import train
from fpsim.training.records import RecordError, RunDB

TINY = {"model": "mlp", "epochs": 1}


def _train_cli(capsys, db, *extra) -> tuple[int, str]:
    """``fpsim train`` in-process: (exit code, stderr)."""
    rc = cli.main(["train", "--epochs", "1", "--db", str(db), "--no-progress", *extra])
    return rc, capsys.readouterr().err


def _report_cli(capsys, db, out, *extra) -> tuple[int, str]:
    rc = cli.main(["report", str(db), "--out", str(out), "--images", "svg", *extra])
    return rc, capsys.readouterr().err


def _one_line_error(err: str, command: str = "train") -> None:
    assert err.startswith(f"fpsim {command}: error: "), err
    assert "Traceback" not in err


def _snapshot(path):
    return path.read_bytes(), os.stat(path).st_mtime_ns


def _quick_check(path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    found = [r[0] for r in con.execute("PRAGMA quick_check")]
    con.close()
    return found


def _zero_a_page(path) -> list[str]:
    """Zero one page of a closed database, the last whose loss quick_check sees (a page of
    the newest checkpoint's blob: its overflow chain breaks); returns what quick_check
    reports."""
    con = sqlite3.connect(path)
    count, size = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    con.close()
    for page in range(count, 1, -1):
        with open(path, "r+b") as f:
            f.seek((page - 1) * size)
            saved = f.read(size)
            f.seek((page - 1) * size)
            f.write(b"\0" * size)
        found = _quick_check(path)
        if found != ["ok"]:
            return found
        with open(path, "r+b") as f:  # (the last page of a chain: its loss is invisible)
            f.seek((page - 1) * size)
            f.write(saved)
    raise AssertionError("no page whose loss quick_check sees")


# -- 1: damaged database ---------------------------------------------------------------------
def test_damaged_database_is_refused_for_writing_and_reported_loudly(tmp_path, capsys):
    db = tmp_path / "study.sqlite"
    train(TINY, db=db)
    train({**TINY, "policy": "mixed_fp16"}, db=db)
    assert _zero_a_page(db) != ["ok"]  # SQLite sees the damage
    before = _snapshot(db)
    rc, err = _train_cli(capsys, db)
    assert rc == 2
    _one_line_error(err)
    assert "quick_check" in err and "did not modify it" in err and "fpsim report" in err
    rc, err = _train_cli(capsys, db, "--resume", "1")
    assert rc == 2 and "quick_check" in err
    with pytest.raises(RecordError, match="damaged"):
        RunDB(db)
    assert _snapshot(db) == before  # nothing written
    rc, err = _report_cli(capsys, db, tmp_path / "rep")
    assert "fpsim report: warning: " in err and "quick_check" in err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**Warning: " in md and "quick_check" in md
    assert _snapshot(db) == before


def test_copy_run_refuses_a_damaged_source(tmp_path):
    src, dst = tmp_path / "src.sqlite", tmp_path / "dst.sqlite"
    train(TINY, db=src)
    assert _zero_a_page(src) != ["ok"]
    with RunDB(dst) as d, pytest.raises(RecordError, match="quick_check"):
        d.copy_run(str(src))


# -- 5: two processes ------------------------------------------------------------------------
def _cli_train(db, *extra):
    return [sys.executable, "-m", "fpsim", "train", "--model", "mlp", "--epochs", "400",
            "--checkpoint-every", "5", "--db", str(db), "--no-progress", "--json", *extra]


def _wait_for(db, proc, query, test, timeout=120):
    """Poll ``query`` on ``db`` (read-only) until ``test(row)``, while ``proc`` runs."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "the run ended before the test was done with it"
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            row = con.execute(query).fetchone()
            con.close()
            if test(row):
                return row
        except sqlite3.DatabaseError:
            # (locked, or once in a loaded run a 'malformed' read of this poller while the
            # resuming process recovered the killed one's WAL: the test ends with quick_check)
            pass
        time.sleep(0.05)
    raise AssertionError(f"{query} did not come true")


def test_a_second_process_neither_steals_a_running_run_nor_is_locked_out(tmp_path):
    """Process A trains run 1. Process B: ``--resume`` and ``--resume 1`` are refused naming
    A; a new run beside it trains. A is killed (its lease left behind): process C's
    ``--resume`` takes run 1 over and continues it past A's checkpoint."""
    db = tmp_path / "shared.sqlite"
    a = subprocess.Popen(_cli_train(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        _wait_for(db, a, "SELECT count(*) FROM checkpoints", lambda r: r[0] > 0)
        for extra in (["--resume"], ["--resume", "1"]):
            b = subprocess.run(_cli_train(db, *extra), capture_output=True, text=True,
                               timeout=120)
            assert b.returncode == 2, b.stderr
            _one_line_error(b.stderr)
            assert f"is being trained by process {a.pid} on " in b.stderr, b.stderr
        beside = subprocess.run(_cli_train(db, "--epochs", "1"), capture_output=True,
                                text=True, timeout=120)
        assert beside.returncode == 0, beside.stderr
        assert json.loads(beside.stdout)["run_id"] == 2
        assert a.poll() is None, "run 1 ended before it could be killed"
    finally:
        a.kill()
        a.communicate(timeout=60)
    with RunDB(db, readonly=True) as r:
        assert r.run(1)["status"] == "running"
        killed_at = r.load_checkpoint(1)[0]
        assert r.con.execute("SELECT pid FROM leases WHERE run_id = 1").fetchone()[0] == a.pid
    c = subprocess.Popen(_cli_train(db, "--resume"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(db, c, "SELECT l.pid, k.step FROM leases l JOIN checkpoints k USING (run_id) "
                  "WHERE run_id = 1", lambda r: r is not None and r[0] == c.pid
                  and r[1] > killed_at)
        c.send_signal(signal.SIGTERM)
        out, err = c.communicate(timeout=60)
    finally:
        c.kill()
    assert c.returncode == 130, err
    assert json.loads(out)["run_id"] == 1
    with RunDB(db, readonly=True) as r:
        assert [x["status"] for x in r.runs()] == ["interrupted", "finished"]
        assert r.con.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
        steps = r.steps(1)["step"]
        assert list(steps) == list(range(r.load_checkpoint(1)[0]))  # whole, no duplicate
        assert r.damage == []


def test_a_writer_waits_for_a_long_transaction_and_then_says_it_is_locked(tmp_path,
                                                                         monkeypatch):
    db = tmp_path / "locked.sqlite"
    train(TINY, db=db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    monkeypatch.setattr(records, "BUSY_TIMEOUT", 0.3)
    try:
        with RunDB(db) as r, pytest.raises(RecordError, match="locked by another process"):
            r.new_run("x", {}, 0, {})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with RunDB(db) as r:  # the lock gone, writing works and nothing was lost
        assert r.new_run("x", {}, 0, {}) == 2
        assert r.run(1)["status"] == "finished"


def test_rows_are_queued_so_the_write_lock_is_held_only_at_commits(tmp_path):
    db = tmp_path / "q.sqlite"
    with RunDB(db) as r:
        rid = r.new_run("x", {}, 0, {})
        r.add_note(rid, 0, "warning", "queued")
        other = sqlite3.connect(db, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # would fail at once if r held the lock
        other.execute("ROLLBACK")
        other.close()
        assert r.notes(rid) == []
        r.commit()
        assert [n["message"] for n in r.notes(rid)] == ["queued"]



def _in_another_process(db, sql: str) -> list:
    """The rows of ``sql`` run (and committed) by a connection of another process."""
    code = (f"import json, sqlite3; c = sqlite3.connect({str(db)!r}); "
            f"r = c.execute({sql!r}).fetchall(); c.commit(); c.close(); print(json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_opening_a_database_again_keeps_the_locks_of_this_processs_connections(tmp_path):
    """A second RunDB of a database this process holds open must not drop the first one's
    POSIX locks (closing any descriptor of a file drops them all): without them another
    process's connection takes itself for the last, deletes the WAL as it closes, and the
    first connection's commits go where nobody else can read them."""
    db = tmp_path / "held.sqlite"
    RunDB(db).close()
    with RunDB(db) as held:
        for readonly in (True, False):
            RunDB(db, readonly=readonly).close()
        _in_another_process(db, "SELECT count(*) FROM runs")
        assert os.path.exists(f"{db}-wal")  # (held still open: nobody may delete its WAL)
        held.new_run("mine", {}, 0, {})
        assert _in_another_process(db, "SELECT name FROM runs") == [["mine"]]
        _in_another_process(db, "INSERT INTO runs (name, config, seed, versions, status, "
                                "created) VALUES ('theirs', '{}', 0, '{}', 'pending', 'now')")
        held.new_run("mine again", {}, 0, {})
    assert _in_another_process(db, "SELECT name FROM runs ORDER BY id") == [
        ["mine"], ["theirs"], ["mine again"]]
    assert _in_another_process(db, "PRAGMA integrity_check") == [["ok"]]

# -- 6: resume under other settings ----------------------------------------------------------
def _stop_after(monkeypatch, steps: int):
    """Make the training loop fail after ``steps`` steps (a crash: the run stays
    resumable from its last checkpoint)."""
    real = loop.Session.train_step

    def step(self, idx, recorder):
        if self.step == steps:
            raise KeyboardInterrupt
        return real(self, idx, recorder)
    monkeypatch.setattr(loop.Session, "train_step", step)


@pytest.mark.parametrize("changed", [False, True])
def test_a_resumed_run_under_other_thread_settings_is_flagged(tmp_path, monkeypatch, capsys,
                                                             changed):
    db = tmp_path / "r.sqlite"
    with monkeypatch.context() as m:
        _stop_after(m, 6)
        with pytest.raises(KeyboardInterrupt):
            train({**TINY, "checkpoint_every": 3}, db=db)
    if changed:
        real = loop.versions
        monkeypatch.setattr(loop, "versions",
                            lambda: {**real(), "numba_threads": real()["numba_threads"] + 1})
        with pytest.warns(RuntimeWarning, match="Numba threads"):
            s = train(db=db, resume=1)
    else:
        s = train(db=db, resume=1)
    assert s["status"] == "finished"
    with RunDB(db) as r:
        notes = [n for n in r.notes(1) if n["kind"] == records.RESUME_SETTINGS_NOTE]
    assert bool(notes) == changed
    if changed:
        assert notes[0]["step"] == 6 and "Numba threads" in notes[0]["message"]
    rc, _ = _report_cli(capsys, db, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert rc == 0 and ("resumed at step 6 under settings that differ" in md) == changed


# -- 7: read-only locations ------------------------------------------------------------------
def test_readonly_open_reads_and_every_write_says_why(tmp_path):
    db = tmp_path / "r.sqlite"
    train(TINY, db=db)
    before = _snapshot(db)
    with RunDB(db, readonly=True) as r:
        assert r.run(1)["status"] == "finished" and len(r.steps(1)["loss"]) == 12
        with pytest.raises(RecordError, match="reading it .* still works"):
            r.new_run("x", {}, 0, {})
        with pytest.raises(RecordError, match="opened for reading only"):
            r.set_status(1, "failed")
    assert _snapshot(db) == before


def _make_read_only(path) -> callable:
    """Make ``path`` (a file or directory) unwritable for this process, returning the undo:
    chmod for a user; for root (whom chmod does not stop) the immutable attribute."""
    if os.geteuid() != 0:
        mode = os.stat(path).st_mode
        os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
        return lambda: os.chmod(path, mode)
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root, where chmod does not stop writes, and chattr +i is not "
                    "available here: the permission case needs a user or chattr")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_location_names_permissions_and_report_still_reads(tmp_path, capsys, what):
    d = tmp_path / "ro"
    d.mkdir()
    db = d / "r.sqlite"
    train(TINY, db=db)
    before = _snapshot(db)
    undo = _make_read_only(db if what == "file" else d)
    try:
        rc, err = _train_cli(capsys, db)
        assert rc == 2
        _one_line_error(err)
        assert "damaged" not in err
        assert ("read-only" if what == "file" else "not writable") in err
        rc, err = _report_cli(capsys, db, tmp_path / "rep")
        assert rc == 0, err
        if what == "directory":  # nor can a new database be created there
            rc, err = _train_cli(capsys, d / "new.sqlite")
            assert rc == 2 and "cannot create" in err and "not writable" in err, err
    finally:
        undo()
    assert _snapshot(db) == before
    assert (tmp_path / "rep" / "report.md").exists()


# -- 9: environment errors -------------------------------------------------------------------
@pytest.mark.parametrize("path, problem", [
    ("/dev/null", "not a regular file"),
    ("/proc/self/status", "file of the kernel"),
    ("{tmp}", "is a directory"),
    ("{tmp}/afile/runs.sqlite", "lies below a file"),
])
def test_a_database_path_that_cannot_hold_a_database_is_named(tmp_path, capsys, path, problem):
    (tmp_path / "afile").write_text("x")
    path = path.format(tmp=tmp_path)
    rc, err = _train_cli(capsys, path)
    assert rc == 2
    _one_line_error(err)
    assert path in err and problem in err
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("out, problem", [("afile", "is a file"),
                                          ("afile/sub", "lies below")])
def test_a_report_directory_that_is_a_file_is_named(tmp_path, capsys, out, problem):
    db = tmp_path / "r.sqlite"
    train(TINY, db=db)
    (tmp_path / "afile").write_text("x")
    rc, err = _report_cli(capsys, db, tmp_path / out)
    assert rc == 2
    _one_line_error(err, "report")
    assert problem in err and "afile" in err


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A directory on a 2 MiB file system: a real tmpfs when this process may mount one
    (root), else a directory whose SQLite databases stop growing at 160 pages of 4 KiB (the
    WAL beside them is not counted; ``PRAGMA max_page_count`` gives the same SQLITE_FULL as a
    full disk: checked by hand, the first run fits and the second fills it)."""
    d = tmp_path / "small"
    d.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
        capture_output=True).returncode == 0
    if not mounted:
        connect = sqlite3.connect

        def limited(*args, **kwargs):
            con = connect(*args, **kwargs)
            con.execute("PRAGMA max_page_count = 160")
            return con
        monkeypatch.setattr(records.sqlite3, "connect", limited)
    yield d, mounted
    if mounted:
        subprocess.run(["umount", str(d)], check=True)


def test_a_full_disk_keeps_what_was_recorded(small_disk, capsys):
    d, mounted = small_disk
    db = d / "runs.sqlite"
    first = train(TINY, db=db)
    rc, err = _train_cli(capsys, db, "--epochs", "30", "--hist-every", "1")
    assert rc == 2, err
    _one_line_error(err)
    assert "disk is full" in err and str(db) in err
    # resuming on the full disk: the same error
    rc = cli.main(["train", "--resume", "--db", str(db), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "disk is full" in err, err
    _one_line_error(err)
    with RunDB(db, readonly=True) as r:  # the first run is whole, its checkpoint loads
        assert r.run(first["run_id"])["status"] == "finished"
        assert r.load_checkpoint(first["run_id"])[0] == 12
        assert len(r.steps(first["run_id"])["loss"]) == 12
        second = r.runs()[1]
        assert second["status"] != "finished"
        # the second run kept a consistent prefix: its rows end at its checkpoint
        ckpt = r.load_checkpoint(second["id"])
        assert len(r.steps(second["id"])["loss"]) == (ckpt[0] if ckpt else 0)


def test_a_full_disk_while_writing_the_report_is_named(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    train({**TINY, "hist_every": 1}, db=db)
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                            str(d)], capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs for --out")
    try:
        rc, err = cli.main(["report", str(db), "--out", str(d / "rep")]), \
            capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(d)], check=True)
    assert rc == 2
    _one_line_error(err, "report")
    assert "No space left" in err and str(d / "rep") in err


# -- 15: crafted records ---------------------------------------------------------------------
LONG = "x" * 300


def _craft(db, *statements) -> None:
    """Change a closed database behind fpsim's back, as a crafted file would be."""
    con = sqlite3.connect(db)
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize("sql, field", [
    ("UPDATE runs SET config = '{}' WHERE id = 2", "no 'policy' field"),
    ("UPDATE runs SET config = '{\"policy\": 5}' WHERE id = 2", "policy cannot be read"),
    ("UPDATE runs SET config = '[1]' WHERE id = 2", "config is a JSON list"),
    ("UPDATE runs SET summary = '[1, 2]' WHERE id = 2", "summary is a JSON list"),
    ("UPDATE runs SET versions = 'not json' WHERE id = 2", "versions is not JSON"),
    ("UPDATE histograms SET counts = NULL WHERE run_id = 2", "histograms.counts) is NULL"),
    ("UPDATE epochs SET test_accuracy = 'abc' WHERE run_id = 2", "epochs.test_accuracy"),
    ("UPDATE site_events SET total = NULL WHERE run_id = 2", "site_events.total"),
    ("UPDATE steps SET loss = x'00' WHERE run_id = 2", "steps.loss of step 0 is blob"),
])
def test_report_skips_a_crafted_run_naming_it_and_the_field(tmp_path, capsys, sql, field):
    db = tmp_path / "c.sqlite"
    train({**TINY, "hist_every": 4}, db=db)
    train({**TINY, "hist_every": 4, "policy": "mixed_fp16"}, db=db)
    _craft(db, sql)
    rc, err = _report_cli(capsys, db, tmp_path / "rep")
    assert rc == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- run 2") or "run 2)" in x)
    assert "unreadable" in line and field in line, line
    assert "| fp32 |" in md  # the sound run is reported


@pytest.mark.filterwarnings("error::UserWarning")  # (the figures keep room for their axes)
def test_report_of_a_run_with_a_300_character_name(tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    train({**TINY, "hist_every": 4, "policy": "mixed_fp16", "name": LONG}, db=db)
    rc, err = _report_cli(capsys, db, tmp_path / "rep")
    assert rc == 0, err
    assert LONG in (tmp_path / "rep" / "report.md").read_text()
    assert all(len(f) < 120 for f in os.listdir(tmp_path / "rep"))


@pytest.mark.parametrize("state, message", [
    ("NULL", "checkpoints.state) is NULL"),
    ("randomblob(600)", "is not an .npz archive"),
    ("CAST(x'504b0304' || randomblob(600) AS BLOB)", "is a damaged .npz archive"),
    ("CAST(x'504b0304' || randomblob(600) AS TEXT)", "is text"),
    ("zeroblob(0)", "is not an .npz archive"),
])
def test_a_crafted_checkpoint_is_named_without_pickle_advice(tmp_path, capsys, state, message):
    db = tmp_path / "c.sqlite"
    train({**TINY, "checkpoint_every": 3}, db=db)
    _craft(db, f"UPDATE checkpoints SET state = {state}",
           "UPDATE runs SET status = 'interrupted'")
    with RunDB(db) as r, pytest.raises(RecordError, match="run 1's checkpoint") as e:
        r.load_checkpoint(1)
    assert message in str(e.value) and "pickle" not in str(e.value)
    rc, err = _train_cli(capsys, db, "--resume", "1")
    assert rc == 2
    _one_line_error(err)
    assert message in err and "pickle" not in err


def test_damage_counts_only_when_a_second_look_finds_it(monkeypatch):
    """A transient read error (another process recovering a killed writer's WAL) must not get
    a sound database refused as damaged; damage found twice is reported."""
    looks = []

    def once(path, results):
        looks.append(path)
        r = results[len(looks) - 1]
        if isinstance(r, Exception):
            raise r
        return r

    monkeypatch.setattr(records, "_RECHECK_DELAY", 0.0)
    transient = records.RecordError("x.sqlite is a damaged SQLite database (malformed)")
    for results, want in [([transient, []], []), ([["page 3: bad"], []], []),
                          ([[], None], []), ([["page 3: bad"], ["page 3: bad"]], ["page 3: bad"])]:
        looks.clear()
        monkeypatch.setattr(records, "_check_existing_once", lambda p: once(p, results))
        assert records._check_existing("x.sqlite") == want
        assert len(looks) == (1 if results[0] == [] else 2)
    looks.clear()
    monkeypatch.setattr(records, "_check_existing_once", lambda p: once(p, [transient, transient]))
    with pytest.raises(records.RecordError, match="damaged"):
        records._check_existing("x.sqlite")
    other = records.RecordError("x.sqlite is not an SQLite database")
    looks.clear()
    monkeypatch.setattr(records, "_check_existing_once", lambda p: once(p, [other]))
    with pytest.raises(records.RecordError, match="not an SQLite"):
        records._check_existing("x.sqlite")
    assert len(looks) == 1  # a foreign file is refused at once
