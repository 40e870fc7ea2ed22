"""Run records in SQLite: one database per study, written transactionally.

Tables (schema version :data:`SCHEMA`):

- ``meta``: ``app = fpsim``, ``schema`` — how a database is recognized as ours.
- ``runs``: one row per run: name, config (JSON), seed, library versions, status
  (``running`` / ``interrupted`` / ``finished`` / ``failed``), times, summary (JSON), and the
  study (``fpsim compare`` invocation) it belongs to.
- ``steps``: per training step: loss, batch accuracy, learning rate, loss scale, skipped,
  gradient underflow rate, non-finite gradient count, wall time.
- ``site_events``: per step and cast site (site, role, direction): the event counts of
  :class:`~fpsim.instrument.Stats`, the loss scale the rounded values carried, and (on shadow
  steps, activation gradients) the paper's underflow count: elements non-zero in a float32
  recomputation of the step but zero in the emulated one (``shadow_underflow``), out of the
  elements non-zero in float32 (``shadow_total``).
- ``scales``: per step and GEMM site of a per-site scaler: carried and local scale.
- ``histograms``: every K steps, per site: the input exponent histogram (int64 counts of the
  binades ``k_min ..``, plus zero / Inf / NaN counts).
- ``notes``: events worth a sentence in a report, per step: warnings raised inside the
  training loop (numpy floating-point warnings and the like, with where they came from), and
  the loop's own observations (``kind``, ``site``, ``message``). Added to older databases of
  the same schema when they are opened.
- ``tensor_scales``: per step and cast site of a scaled format (role, direction): the tensor's
  amax, the per-tensor encode scale (current / delayed scaling), S2FP8's ``alpha`` and
  ``beta``, the number of tiles and how many of their scales fell below / above the scale
  format's range, and the tiles holding Inf/NaN. Added to older databases like ``notes``.
- ``params``: for runs trained with ``lca=True``, the parameters after every step (``step`` =
  steps done, 0 the initialization): every parameter's float32 master values in
  ``named_parameters`` order, as one little-endian blob (what loss-change allocation integrates
  along). Added to older databases like ``notes``.
- ``sweep_runs``: the runs of ``fpsim sweep``: study, the hash of the run's resolved config,
  run id (how a sweep run again finds what it already finished). Added like ``notes``.
- ``epochs``: per epoch: train loss/accuracy, test loss/accuracy.
- ``checkpoints``: the latest checkpoint of each run (an ``.npz`` blob of model, optimizer and
  loop state), the point ``--resume`` continues from.
- ``leases``: which process is training a run now (pid, host, a token of its connection, the
  time of its last checkpoint), so that a second process never resumes a run another one is
  writing. Added like ``notes``.

Writers: a run's rows are queued in memory and written in one short transaction at each commit
or checkpoint, so another process (a second ``fpsim train`` on the same database) waits
milliseconds for the write lock, not the time between checkpoints; SQLite's busy timeout
(:data:`BUSY_TIMEOUT`) covers the wait. A database that ``PRAGMA quick_check`` finds damaged
is never written to (``RunDB(path)`` refuses it; ``RunDB(path, readonly=True)`` opens it with
the damage in :attr:`RunDB.damage`); one this process may not write opens for reading, with
the reason in :attr:`RunDB.read_only_reason`.

A run's rows are committed together with its checkpoint, so after any interruption the
database holds a consistent prefix of the run; :meth:`RunDB.truncate` drops rows beyond the
checkpoint before a resumed run recomputes them.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import socket
import sqlite3
import stat
import time
import urllib.parse
import uuid
import zipfile

import numpy as np

SCHEMA = 2

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT, config TEXT NOT NULL, seed INTEGER,
    versions TEXT, status TEXT NOT NULL, created TEXT, finished TEXT, summary TEXT, study TEXT);
CREATE TABLE steps (run_id INTEGER, step INTEGER, epoch INTEGER, loss REAL, accuracy REAL,
    lr REAL, loss_scale REAL, skipped INTEGER, grad_underflow_rate REAL, nonfinite INTEGER,
    seconds REAL, PRIMARY KEY (run_id, step));
CREATE TABLE site_events (run_id INTEGER, step INTEGER, site TEXT, role TEXT, direction TEXT,
    total INTEGER, underflow INTEGER, subnormal INTEGER, overflow INTEGER, nan INTEGER,
    inexact INTEGER, zeros INTEGER, scale REAL, shadow_underflow INTEGER, shadow_total INTEGER,
    PRIMARY KEY (run_id, step, site, role, direction));
CREATE TABLE scales (run_id INTEGER, step INTEGER, site TEXT, carried REAL, local REAL,
    PRIMARY KEY (run_id, step, site));
CREATE TABLE histograms (run_id INTEGER, step INTEGER, site TEXT, role TEXT, direction TEXT,
    k_min INTEGER, counts BLOB, zeros INTEGER, infs INTEGER, nans INTEGER,
    PRIMARY KEY (run_id, step, site, role, direction));
CREATE TABLE epochs (run_id INTEGER, epoch INTEGER, step INTEGER, train_loss REAL,
    train_accuracy REAL, test_loss REAL, test_accuracy REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS notes (run_id INTEGER, step INTEGER, kind TEXT, site TEXT,
    message TEXT, count INTEGER);
CREATE TABLE IF NOT EXISTS tensor_scales (run_id INTEGER, step INTEGER, site TEXT, role TEXT,
    direction TEXT, amax REAL, scale REAL, alpha REAL, beta REAL, tiles INTEGER,
    scale_underflow INTEGER, scale_overflow INTEGER, nonfinite INTEGER);
CREATE TABLE IF NOT EXISTS params (run_id INTEGER, step INTEGER, blob BLOB,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS sweep_runs (study TEXT, config_hash TEXT, run_id INTEGER);
CREATE INDEX IF NOT EXISTS sweep_runs_by_hash ON sweep_runs (study, config_hash);
CREATE TABLE IF NOT EXISTS leases (run_id INTEGER PRIMARY KEY, pid INTEGER, host TEXT,
    token TEXT, heartbeat TEXT);
CREATE TABLE checkpoints (run_id INTEGER PRIMARY KEY, step INTEGER, epoch INTEGER,
    created TEXT, state BLOB);
"""
_STEP_TABLES = ("steps", "site_events", "histograms", "scales", "notes", "tensor_scales")
#: Every table holding a run's rows (``runs`` first; the others by ``run_id``).
_RUN_TABLES = ("runs", *_STEP_TABLES, "params", "epochs", "checkpoints")
_ADDITIVE_TABLES = _TABLES[_TABLES.index("CREATE TABLE IF NOT EXISTS notes"):
                       _TABLES.index("CREATE TABLE checkpoints")]


class RecordError(ValueError):
    """A database that is not an fpsim run record (foreign, corrupt, newer schema), a run
    that does not exist, or a database this process cannot write (the message says why)."""


#: Seconds a writer waits for another process's write transaction before it gives up.
BUSY_TIMEOUT = 60.0
#: A lease of a process on another host whose last checkpoint is older than this (seconds)
#: is taken as abandoned (on this host a lease is abandoned when its process is gone).
LEASE_STALE_SECONDS = 3600
#: At most this many lines of ``PRAGMA quick_check`` are kept and shown.
_DAMAGE_LINES = 10
#: Kernel file systems whose files look regular but are not storage (``/dev`` holds devices,
#: which are not regular files, and ``/dev/shm``, which is storage).
_KERNEL_FS = ("/proc/", "/sys/")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _ro_uri(path: str, immutable: bool = False) -> str:
    """The read-only URI of ``path`` (quoted: a ``?`` or ``#`` in a file name is no option)."""
    quoted = urllib.parse.quote(os.path.abspath(path))
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def _connect_ro(path: str) -> sqlite3.Connection:
    """A read-only connection to ``path``. A WAL database in a directory this process cannot
    write cannot create its ``-shm`` file; then it is opened as immutable (nobody can write
    there either, so nothing changes under the reader)."""
    con = sqlite3.connect(_ro_uri(path), uri=True, timeout=BUSY_TIMEOUT)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.OperationalError as e:
        con.close()
        if e.sqlite_errorname != "SQLITE_CANTOPEN":
            raise
    return sqlite3.connect(_ro_uri(path, immutable=True), uri=True)


def _check_location(path: str) -> None:
    """Raise RecordError when ``path`` cannot hold a database at all: a directory, a device
    or pipe, a kernel file (``/proc``), or a path below a file."""
    if path == ":memory:":
        return
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise RecordError(f"{path} is a directory, not a run-record database; give a "
                          "file name (e.g. runs.sqlite)")
    if any(real.startswith(k) for k in _KERNEL_FS):
        raise RecordError(f"{path} is a file of the kernel ({os.path.dirname(real)}), not "
                          "storage for a database; give a file name such as runs.sqlite")
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise RecordError(f"{path} lies below a file, not a directory; give a path whose "
                          "directories are directories") from None
    except OSError as e:
        raise RecordError(f"cannot read {path}: {e.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise RecordError(f"{path} is not a regular file (a device, pipe or socket); give a "
                          "database file name such as runs.sqlite")
    if mode is None:
        parent = os.path.dirname(os.path.abspath(path))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            raise RecordError(f"{path} lies below {parent}, which is a file, not a directory")


def _why_unwritable(path: str) -> str | None:
    """Why this process may not write the database ``path`` (None: it may). SQLite keeps its
    journal files beside the database, so the directory must be writable too."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is read-only (no write permission, or an immutable file)"
    if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
        return (f"its directory {parent} is not writable (SQLite keeps its journal files "
                "beside the database)")
    return None


def _check_existing(path: str) -> list[str]:
    """Raise RecordError unless ``path`` is an fpsim database; never writes to it. Returns
    what ``PRAGMA quick_check`` reports (empty when the file is sound).

    Damage counts only when a second look, after :data:`_RECHECK_DELAY` seconds, finds it
    again: a "malformed" error from a database that passes quick_check a moment later is a
    view of another process's half-recovered WAL, not damage (the one such error traced to its
    cause came from this process dropping its own locks, see :func:`_check_existing_once`).
    """
    try:
        found = _check_existing_once(path)
    except RecordError as e:
        if "damaged" not in str(e):
            raise
        found = None
    if found == []:
        return found
    time.sleep(_RECHECK_DELAY)
    return _check_existing_once(path)


#: Seconds before a database found damaged is checked a second time (:func:`_check_existing`).
_RECHECK_DELAY = 0.5


def _check_existing_once(path: str) -> list[str]:
    """One look of :func:`_check_existing`.

    The file is read through SQLite only, never opened by Python: closing any descriptor of a
    file drops every POSIX lock the process holds on it, those of this process's open
    connections included. Another process's connection then takes itself for the last one
    and, as it closes, checkpoints and deletes the WAL and its index under the connections
    still open here: their later commits go to a deleted file, and a new connection here
    reads the deleted index ("database disk image is malformed"). SQLite's "How To Corrupt An
    SQLite Database File" describes it; a separate read of the header once did this."""
    if not os.access(path, os.R_OK):
        raise RecordError(f"cannot read {path}: permission denied")
    try:
        con = _connect_ro(path)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(con.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
            # O(size): about 0.5 s for 100 MB (warm cache); run once per open
            found = [r[0] for r in con.execute(f"PRAGMA quick_check({_DAMAGE_LINES})")]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        name = getattr(e, "sqlite_errorname", "")
        if name == "SQLITE_NOTADB":
            raise RecordError(f"{path} is not an SQLite database (corrupt or foreign file); "
                              "choose another --db") from None
        if name == "SQLITE_CANTOPEN":
            raise RecordError(f"cannot open {path}: {e} (check the permissions of the file "
                              "and its directory)") from e
        raise RecordError(f"{path} is a damaged SQLite database ({e}); choose another --db") from e
    if meta.get("app") != "fpsim":
        raise RecordError(f"{path} is an SQLite database of another application (tables: "
                          f"{', '.join(sorted(tables)) or 'none'}); fpsim will not write to it")
    if int(meta.get("schema", -1)) != SCHEMA:
        raise RecordError(f"{path} has run-record schema {meta.get('schema')}, this fpsim "
                          f"reads schema {SCHEMA}; use a new --db (or the fpsim that wrote it)")
    if found == ["ok"]:
        return []
    # one row can hold several lines; the "*** in database main ***" header says nothing
    return [line for row in found for line in str(row).splitlines()
            if line.strip() and not line.startswith("***")][:_DAMAGE_LINES]


def damage_message(path: str, damage: list[str]) -> str:
    """What ``PRAGMA quick_check`` found in ``path``, that it was not modified, and what still
    works."""
    shown = "; ".join(damage[:3]) + (f"; and {len(damage) - 3} more" if len(damage) > 3 else "")
    return (f"{path} is damaged (SQLite's quick_check: {shown}); fpsim did not modify it and "
            "will not write to it. Its undamaged runs can still be read (`fpsim report` "
            "reports what it can read); record new runs in another --db")


def _write_error(path: str, e: sqlite3.Error) -> str:
    """The one-line message of a failed write to ``path``."""
    name = getattr(e, "sqlite_errorname", "") or ""
    kept = ("the records committed before it (up to the last checkpoint) are kept")
    if name == "SQLITE_FULL":
        return (f"cannot write to {path}: the disk is full ({e}); {kept}; free space and "
                "continue with --resume")
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        return (f"{path} stayed locked by another process writing to it for more than "
                f"{BUSY_TIMEOUT:.0f} s ({e}); try again when it has finished, or use another --db")
    if name.startswith("SQLITE_READONLY"):
        return f"cannot write to {path}: it is read-only ({e}); reading it still works"
    if name.startswith("SQLITE_IOERR"):
        return f"cannot write to {path}: input/output error ({e}); {kept}"
    if name.startswith("SQLITE_CORRUPT"):
        return f"cannot write to {path}: the database is damaged ({e}); {kept}"
    return f"cannot write to {path}: {e}; {kept}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _lease_holder(row) -> str | None:
    """A description of the live process holding a lease row ``(pid, host, token,
    heartbeat)``, or None when it is abandoned (its process gone, or on another host silent
    for :data:`LEASE_STALE_SECONDS`)."""
    pid, host, _token, heartbeat = row
    try:
        if host == socket.gethostname():
            alive = _pid_alive(int(pid))
        else:
            last = datetime.datetime.fromisoformat(heartbeat)
            age = (datetime.datetime.now(datetime.timezone.utc) - last).total_seconds()
            alive = age < LEASE_STALE_SECONDS
    except (TypeError, ValueError, OverflowError):  # a row fpsim did not write: no claim
        alive = False
    return f"process {pid} on {host} (last checkpoint {heartbeat})" if alive else None


class RunDB:
    """An fpsim run-record database (created if ``path`` does not exist or is empty).

    Args:
        path: the database file (``':memory:'`` for records that are not kept).
        readonly: open for reading only; a damaged database then opens (with :attr:`damage`
            set) instead of being refused.

    Attributes:
        damage: what ``PRAGMA quick_check`` reported (empty: sound).
        read_only_reason: why this connection does not write (None: it does); every write
            raises RecordError with it.

    Raises:
        RecordError: ``path`` exists but is not an fpsim database, or (unless ``readonly``)
            it is damaged; the file is left untouched.
    """

    def __init__(self, path: str, readonly: bool = False):
        self.path = os.fspath(path)
        if not self.path.strip():
            # (SQLite would open a temporary database and every record would be lost; an
            # in-memory one is asked for by name, ":memory:")
            raise RecordError(f"{self.path!r} is not a database file name; give a path such as "
                              "runs.sqlite (or ':memory:' for records that are not kept)")
        _check_location(self.path)
        self.damage: list[str] = []
        self.read_only_reason = "opened for reading only" if readonly else None
        self._queue: list[tuple[str, list]] = []
        self._token = uuid.uuid4().hex  # this connection's leases
        self._held: set[int] = set()
        memory = self.path == ":memory:"
        fresh = memory or not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        if fresh and readonly:
            raise RecordError(f"{self.path} is not a run-record database (it does not exist "
                              "or is empty)")
        if not fresh:
            self.damage = _check_existing(self.path)
            if self.damage and not readonly:
                raise RecordError(damage_message(self.path, self.damage))
            if self.read_only_reason is None:
                self.read_only_reason = _why_unwritable(self.path)
        elif not memory and _why_unwritable(self.path):
            raise RecordError(f"cannot create the database {self.path}: "
                              f"{_why_unwritable(self.path)}")
        if self.read_only_reason is not None:
            self.con = _connect_ro(self.path)
            return
        try:
            if not memory:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        except (OSError, sqlite3.OperationalError) as e:
            raise RecordError(f"cannot open or create the database {self.path}: {e}") from e
        try:
            self.con.execute("PRAGMA journal_mode=WAL")  # readers (reports) while a run writes
            self.con.execute("PRAGMA synchronous=NORMAL")
            with self._writing():
                if fresh:
                    self.con.executescript(_TABLES)
                    self.con.executemany("INSERT INTO meta VALUES (?, ?)",
                                         [("app", "fpsim"), ("schema", str(SCHEMA))])
                else:  # an additive table: databases written before it existed gain it
                    self.con.executescript(_ADDITIVE_TABLES)
        except (sqlite3.Error, RecordError) as e:
            self.con.close()
            raise RecordError(f"cannot {'create' if fresh else 'open'} the database "
                              f"{self.path}: {e}") from e

    def close(self):
        """Release this connection's leases (best effort: a process that dies leaves them
        to be taken over) and close it."""
        if self._held and self.read_only_reason is None:
            with contextlib.suppress(sqlite3.Error):
                with self.con:
                    self.con.execute("DELETE FROM leases WHERE token = ?", (self._token,))
        self._held.clear()
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.read_only_reason is not None:
            raise RecordError(f"cannot record in {self.path}: {self.read_only_reason}; reading "
                              "it (fpsim report) still works; give another --db to record")

    @contextlib.contextmanager
    def _writing(self, immediate: bool = False):
        """One write transaction: the queued rows and whatever the block executes, committed
        together or (on any error) rolled back, the queue dropped and the SQLite error turned
        into a RecordError that says what happened. ``immediate`` takes the write lock first
        (a read-then-write that another writer must not interleave)."""
        self._require_writable()
        try:
            if immediate:
                self.con.execute("BEGIN IMMEDIATE")
            for sql, rows in self._queue:
                self.con.executemany(sql, rows)
            self._queue.clear()
            yield
            self.con.commit()
        except BaseException as e:
            self._queue.clear()
            with contextlib.suppress(sqlite3.Error):
                self.con.rollback()
            if isinstance(e, sqlite3.Error):
                raise RecordError(_write_error(self.path, e)) from e
            raise

    def _queue_rows(self, sql: str, rows: list) -> None:
        """Queue rows for the next commit (see the module docstring: short write locks)."""
        self._require_writable()
        if rows:
            self._queue.append((sql, rows))

    # -- runs --------------------------------------------------------------------------------
    def new_run(self, name: str, config: dict, seed: int, versions: dict,
                study: str | None = None) -> int:
        """Insert a run (status ``running``) leased to this connection and commit; returns
        its id."""
        with self._writing():
            cur = self.con.execute(
                "INSERT INTO runs (name, config, seed, versions, status, created, study) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (name, json.dumps(config, sort_keys=True, default=_python_object), seed,
                 json.dumps(versions), _now(), study))
            self._lease(cur.lastrowid)
        return cur.lastrowid

    def run(self, run_id: int) -> dict:
        """The run's row as a dict (config and summary decoded).

        Raises:
            RecordError: no such run, or a field that does not decode to what fpsim writes
                (config a JSON object; versions and summary a JSON object or NULL).
        """
        row = self.con.execute("SELECT id, name, config, seed, versions, status, created, finished, "
                               "summary, study FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RecordError(f"no run {run_id} in {self.path}")
        keys = ("id", "name", "config", "seed", "versions", "status", "created", "finished",
                "summary", "study")
        d = dict(zip(keys, row))
        for k in ("config", "versions", "summary"):
            d[k] = self._json_object(run_id, k, d[k], null=k != "config")
        for k in ("name", "status", "study"):
            if d[k] is not None and not isinstance(d[k], str):
                raise RecordError(f"run {run_id} in {self.path}: its {k} is "
                                  f"{type(d[k]).__name__} {d[k]!r}, not text")
        return d

    def _json_object(self, run_id: int, field: str, text, null: bool):
        """``text`` (a runs column) decoded, checked to be a JSON object (or NULL if
        ``null``)."""
        if text is None or text == "":
            if null:
                return None
            raise RecordError(f"run {run_id} in {self.path}: its {field} is empty")
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            raise RecordError(f"run {run_id} in {self.path}: its {field} is not JSON") from None
        if not isinstance(value, dict):
            raise RecordError(f"run {run_id} in {self.path}: its {field} is a JSON "
                              f"{type(value).__name__}, not an object")
        return value

    def run_ids(self, study: str | None = None) -> list[int]:
        """Ids of every run (of ``study``, if given), oldest first."""
        if study is None:
            return [r[0] for r in self.con.execute("SELECT id FROM runs ORDER BY id")]
        return [r[0] for r in self.con.execute("SELECT id FROM runs WHERE study = ? ORDER BY id",
                                               (study,))]

    def runs(self, study: str | None = None) -> list[dict]:
        """Every run (of ``study``, if given), oldest first."""
        return [self.run(i) for i in self.run_ids(study)]

    def studies(self) -> list[str]:
        """Names of the studies in the database, oldest first."""
        return [r[0] for r in self.con.execute(
            "SELECT study FROM runs WHERE study IS NOT NULL GROUP BY study ORDER BY min(id)")]

    def latest_unfinished(self) -> int:
        """Id of the newest run that did not finish and that no live process is training."""
        held = []
        for (run_id,) in self.con.execute(
                "SELECT id FROM runs WHERE status != 'finished' ORDER BY id DESC").fetchall():
            holder = self.lease_holder(run_id)
            if holder is None:
                return run_id
            held.append(f"run {run_id} is being trained by {holder}")
        raise RecordError(f"no unfinished run to resume in {self.path}"
                          + (f" ({'; '.join(held[:3])})" if held else ""))

    def claim(self, run_id: int | None = None) -> int:
        """Lease run ``run_id`` (default: :meth:`latest_unfinished`) to this connection, so
        that no other process resumes it while this one trains it; returns its id. The check
        and the lease are one transaction holding the write lock, so two processes claiming
        at once cannot both win.

        Raises:
            RecordError: no such run, it finished, or a live process is training it.
        """
        with self._writing(immediate=True):
            if run_id is None:
                run_id = self.latest_unfinished()
            status = self.run(run_id)["status"]
            if status == "finished":
                raise RecordError(f"run {run_id} in {self.path} already finished; nothing to "
                                  "resume")
            holder = self.lease_holder(run_id)
            if holder is not None:
                raise RecordError(f"run {run_id} in {self.path} is being trained by {holder}; "
                                  "resume it when that process has stopped")
            self._lease(run_id)
        return run_id

    def lease_holder(self, run_id: int) -> str | None:
        """Who (another live process) trains run ``run_id`` now, in words; None if nobody
        else does."""
        if not self._has_table("leases"):
            return None
        row = self.con.execute("SELECT pid, host, token, heartbeat FROM leases WHERE run_id = ?",
                               (run_id,)).fetchone()
        if row is None or row[2] == self._token:
            return None
        return _lease_holder(row)

    def _lease(self, run_id: int) -> None:
        """Write this connection's lease of ``run_id`` (inside the caller's transaction)."""
        self.con.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                         (run_id, os.getpid(), socket.gethostname(), self._token, _now()))
        self._held.add(run_id)

    def _renew_lease(self, run_id: int) -> None:
        """Renew this connection's lease of ``run_id`` at a checkpoint (inside the caller's
        transaction); a lease another process has taken over stops this one."""
        if run_id not in self._held:
            return
        cur = self.con.execute("UPDATE leases SET heartbeat = ? WHERE run_id = ? AND token = ?",
                               (_now(), run_id, self._token))
        if cur.rowcount == 0:
            self._held.discard(run_id)
            raise RecordError(f"run {run_id} in {self.path} was taken over by another process "
                              "(its lease was judged abandoned); this process stops without "
                              "writing its steps since the last checkpoint")

    def set_status(self, run_id: int, status: str, summary: dict | None = None) -> None:
        """Set a run's status (and summary), committing everything written so far; any
        status but ``running`` ends this connection's lease of the run."""
        with self._writing():
            self.con.execute("UPDATE runs SET status = ?, summary = COALESCE(?, summary), "
                             "finished = ? WHERE id = ?",
                             (status, None if summary is None else json.dumps(summary),
                              _now() if status == "finished" else None, run_id))
            if status != "running" and run_id in self._held:
                self.con.execute("DELETE FROM leases WHERE run_id = ? AND token = ?",
                                 (run_id, self._token))
                self._held.discard(run_id)

    # -- per-step rows (committed by checkpoint / commit) ---------------------------------------
    def add_step(self, run_id: int, step: int, epoch: int, metrics: dict, summary,
                 shadow: dict | None = None, scales: dict | None = None) -> None:
        """Queue one step's metrics and per-site events (committed by the next :meth:`commit`
        or :meth:`checkpoint`).

        Args:
            shadow: ``site -> (lost, non-zero in float32)`` of the shadow comparison, if made.
            scales: ``site -> (carried, local)`` of a per-site scaler.
        """
        self._queue_rows(
            "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, step, epoch, metrics["loss"], metrics["accuracy"], metrics["lr"],
             metrics["loss_scale"], int(metrics["skipped"]), metrics["grad_underflow_rate"],
             metrics["nonfinite"], metrics["seconds"])])
        if summary is not None:
            shadow = shadow or {}

            def sh(site, role, i):
                return shadow[site][i] if role == "activation-grad" and site in shadow else None
            self._queue_rows(
                "INSERT INTO site_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, step, site, role, d, s.total, s.underflow, s.subnormal, s.overflow,
                  s.nan, s.inexact, s.hist_zero, summary.scale(site, role, d),
                  sh(site, role, 0), sh(site, role, 1)) for site, role, d, s in summary.rows()])
        if scales:
            self._queue_rows("INSERT INTO scales VALUES (?, ?, ?, ?, ?)",
                                 [(run_id, step, k, a, s) for k, (a, s) in sorted(scales.items())])

    def add_note(self, run_id: int, step: int, kind: str, message: str, site: str | None = None,
                 count: int = 1) -> None:
        """Queue a note on a step: ``kind`` (``warning``, ``forward-overflow``, ...), the site
        it concerns (or None), a one-line ``message`` and how many times it happened."""
        self._queue_rows("INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)",
                         [(run_id, step, kind, site, message, int(count))])

    def add_tensor_scales(self, run_id: int, step: int, rows: list[dict]) -> None:
        """Queue one step's scale rows of the scaled casts (see the ``tensor_scales`` table)."""
        self._queue_rows(
            "INSERT INTO tensor_scales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, step, r["site"], r["role"], r["direction"], r["amax"], r["scale"],
              r["alpha"], r["beta"], r["tiles"], r["scale_underflow"], r["scale_overflow"],
              r["nonfinite"]) for r in rows])

    def add_params(self, run_id: int, step: int, flat: np.ndarray) -> None:
        """Queue the parameters after ``step`` steps (``flat``: every parameter's float32 values
        concatenated in ``named_parameters`` order); a row already there is replaced (a resumed
        run writes its starting point again)."""
        blob = np.ascontiguousarray(flat, "<f4").tobytes()
        self._queue_rows("INSERT OR REPLACE INTO params VALUES (?, ?, ?)", [(run_id, step, blob)])

    def param_steps(self, run_id: int) -> list[int]:
        """The steps whose parameters the run saved (empty unless it trained with
        ``lca=True``), in order."""
        if not self._has_table("params"):
            return []
        return [r[0] for r in self.con.execute(
            "SELECT step FROM params WHERE run_id = ? ORDER BY step", (run_id,))]

    def load_params(self, run_id: int, step: int) -> np.ndarray:
        """The float32 parameter vector saved after ``step`` steps of run ``run_id``."""
        row = self.con.execute("SELECT blob FROM params WHERE run_id = ? AND step = ?",
                               (run_id, step)).fetchone() if self._has_table("params") else None
        if row is None:
            raise RecordError(f"run {run_id} in {self.path} holds no parameters of step {step}")
        return np.frombuffer(row[0], "<f4").astype(np.float32)

    def tensor_scales(self, run_id: int) -> list[dict]:
        """The run's scale rows of scaled casts, in step order."""
        if not self._has_table("tensor_scales"):
            return []
        return self._dicts("tensor_scales", run_id, "step, rowid")

    def add_histograms(self, run_id: int, step: int, summary) -> None:
        """Queue the exponent histograms of every site of one step."""
        rows = []
        for site, role, d, s in summary.rows():
            k, counts = s.binades()
            rows.append((run_id, step, site, role, d, int(k[0]) if k.size else 0,
                         counts.astype("<i8").tobytes(), s.hist_zero, s.hist_inf, s.hist_nan))
        self._queue_rows("INSERT INTO histograms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_epoch(self, run_id: int, epoch: int, step: int, row: dict) -> None:
        """Queue one epoch's evaluation."""
        self._queue_rows("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(run_id, epoch, step, row["train_loss"], row["train_accuracy"],
                           row["test_loss"], row["test_accuracy"], row["seconds"])])

    def commit(self) -> None:
        """Write every queued row in one transaction."""
        with self._writing():
            pass

    def checkpoint(self, run_id: int, step: int, epoch: int, state: dict) -> None:
        """Replace the run's checkpoint with ``state`` (flat dict of arrays) at ``step`` and
        commit it together with every queued row."""
        buf = io.BytesIO()
        np.savez(buf, **state)
        with self._writing():
            self._renew_lease(run_id)
            self.con.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                             (run_id, step, epoch, _now(), buf.getvalue()))

    def load_checkpoint(self, run_id: int) -> tuple[int, dict] | None:
        """``(step, state)`` of the run's checkpoint, or None."""
        # (typeof and CAST: a crafted text value would not even decode as UTF-8)
        row = self.con.execute("SELECT step, typeof(state), CAST(state AS BLOB) FROM checkpoints "
                               "WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        where = f"run {run_id}'s checkpoint in {self.path} (checkpoints.state)"
        if row[1] != "blob":
            raise RecordError(f"{where} is {'NULL' if row[1] == 'null' else row[1]}, not an .npz "
                              "blob; the run cannot be resumed or read from it")
        row = (row[0], row[2])
        if not isinstance(row[0], int):
            raise RecordError(f"{where}: its step is {row[0]!r}, not an integer")
        # An .npz is a zip archive: anything else is refused here, before numpy would try to
        # read it (as a pickle, which allow_pickle=False refuses with advice not to follow).
        if not row[1].startswith(b"PK\x03\x04"):
            raise RecordError(f"{where} is not an .npz archive (damaged or foreign bytes)")
        try:
            with np.load(io.BytesIO(row[1]), allow_pickle=False) as z:
                return row[0], {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise RecordError(f"{where} is a damaged .npz archive ({type(e).__name__})") from None

    def truncate(self, run_id: int, step: int) -> None:
        """Delete the run's step rows from ``step`` on and epochs that ended there or later
        (rows a resumed run will write again)."""
        with self._writing():
            for t in _STEP_TABLES:
                self.con.execute(f"DELETE FROM {t} WHERE run_id = ? AND step >= ?", (run_id, step))
            self.con.execute("DELETE FROM epochs WHERE run_id = ? AND step > ?", (run_id, step))
            # params rows are keyed by steps done: the checkpoint's own point stays
            self.con.execute("DELETE FROM params WHERE run_id = ? AND step > ?", (run_id, step))

    # -- moving runs between databases ----------------------------------------------------------
    def copy_run(self, source: str, run_id: int | None = None, study: str | None = None,
                 sweep_hash: str | None = None) -> int:
        """Copy run ``run_id`` (default: the only run) of the fpsim database ``source`` with all
        its rows into this one under a new run id, in one transaction; returns the id.

        The rows are copied inside SQLite (``ATTACH`` and ``INSERT ... SELECT``), so values keep
        their bits and a run of a megabyte moves in about ten milliseconds. This is how the
        client of a sweep stores what a worker sends back (its run's database file), and how
        runs of separate studies are merged. ``study`` replaces the run's study if given. With
        ``sweep_hash`` the run's ``sweep_runs`` row is part of the same transaction (a crash
        leaves both or neither); and when the study already holds a finished run of that hash
        (another client finished it meanwhile) nothing is copied and that run's id is returned.

        Raises:
            RecordError: ``source`` is not an fpsim database of this schema, it has no such run
                (or several runs and no ``run_id``), or its tables carry columns this fpsim
                does not know.
        """
        source = os.fspath(source)
        if os.path.abspath(source) == os.path.abspath(self.path):
            raise RecordError(f"cannot copy a run of {self.path} into itself")
        damage = _check_existing(source)  # (ours: the file's tables are read, never run)
        if damage:
            raise RecordError(damage_message(source, damage))
        self._require_writable()
        self.con.execute("ATTACH DATABASE ? AS source", (source,))
        try:
            ids = [r[0] for r in self.con.execute("SELECT id FROM source.runs ORDER BY id")]
            if run_id is None:
                if len(ids) != 1:
                    raise RecordError(f"{source} holds {len(ids)} runs: say which to copy")
                run_id = ids[0]
            elif run_id not in ids:
                raise RecordError(f"no run {run_id} in {source}")
            tables = {r[0] for r in self.con.execute(
                "SELECT name FROM source.sqlite_master WHERE type = 'table'")}
            with self._writing():
                cur = self.con.execute("SELECT * FROM source.runs WHERE id = ?", (run_id,))
                run = dict(zip([d[0] for d in cur.description], cur.fetchone()))
                del run["id"]
                if study is not None:
                    run["study"] = study
                if sweep_hash is not None and run.get("status") == "finished":
                    row = self.con.execute(
                        "SELECT s.run_id FROM sweep_runs s JOIN runs r ON r.id = s.run_id "
                        "WHERE s.study IS ? AND s.config_hash = ? AND r.status = 'finished'",
                        (run.get("study"), sweep_hash)).fetchone()
                    if row is not None:
                        return row[0]
                cols = self._columns("main", "runs", run)
                new_id = self.con.execute(
                    f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [run[c] for c in cols]).lastrowid
                for table in _RUN_TABLES[1:]:
                    if table not in tables:
                        continue
                    cols = [c for c in self._columns("source", table) if c != "run_id"]
                    names = ", ".join(cols)
                    self.con.execute(
                        f"INSERT INTO main.{table} (run_id, {names}) SELECT ?, {names} FROM "
                        f"source.{table} WHERE run_id = ? ORDER BY rowid", (new_id, run_id))
                if sweep_hash is not None:
                    self.con.execute("INSERT INTO sweep_runs VALUES (?, ?, ?)",
                                     (run.get("study"), sweep_hash, new_id))
            return new_id
        finally:
            self.con.execute("DETACH DATABASE source")

    def _columns(self, schema: str, table: str, keys=None) -> list[str]:
        """The columns of ``schema.table`` (``keys``: the names a row carries), checked against
        this database's own table: a column it lacks is a RecordError, and only names from our
        own schema reach a statement."""
        ours = [r[1] for r in self.con.execute(f"PRAGMA main.table_info({table})")]
        theirs = list(keys) if keys is not None else [
            r[1] for r in self.con.execute(f"PRAGMA {schema}.table_info({table})")]
        unknown = sorted(set(theirs) - set(ours))
        if unknown:
            raise RecordError(f"the run's {table} table has columns this fpsim does not know: "
                              f"{', '.join(unknown)}")
        return [c for c in ours if c in set(theirs)]

    def add_failed_run(self, name: str, config: dict, seed: int, versions: dict,
                       study: str | None, summary: dict, sweep_hash: str | None = None) -> int:
        """Insert a run that failed before it recorded anything (status ``failed``, the error
        in ``summary``) and, with ``sweep_hash``, its ``sweep_runs`` row, in one transaction;
        returns its id."""
        with self._writing():
            cur = self.con.execute(
                "INSERT INTO runs (name, config, seed, versions, status, created, summary, "
                "study) VALUES (?, ?, ?, ?, 'failed', ?, ?, ?)",
                (name, json.dumps(config, sort_keys=True, default=_python_object), seed,
                 json.dumps(versions), _now(), json.dumps(summary), study))
            if sweep_hash is not None:
                self.con.execute("INSERT INTO sweep_runs VALUES (?, ?, ?)",
                                 (study, sweep_hash, cur.lastrowid))
        return cur.lastrowid

    def sweep_runs(self, study: str | None = None) -> dict:
        """``{config hash: (run id, status)}`` of the sweep runs (of ``study``, if given); for a
        hash run more than once, its finished run if there is one, else the newest."""
        if not self._has_table("sweep_runs"):
            return {}
        q = ("SELECT s.config_hash, s.run_id, r.status FROM sweep_runs s JOIN runs r "
             "ON r.id = s.run_id" + (" WHERE s.study = ?" if study is not None else "")
             + " ORDER BY s.rowid")
        out: dict[str, tuple] = {}
        for h, rid, status in self.con.execute(q, () if study is None else (study,)):
            if h not in out or out[h][1] != "finished":
                out[h] = (rid, status)
        return out

    def _has_table(self, name: str) -> bool:
        return self.con.execute("SELECT name FROM sqlite_master WHERE name = ?",
                                (name,)).fetchone() is not None

    # -- reading --------------------------------------------------------------------------------
    def _check_numbers(self, table: str, run_id: int) -> None:
        """Raise RecordError naming the run, table, column and step when a column that fpsim
        writes as a number holds something else (text, a blob; NULL where it never writes
        one), so that no reader computes with it."""
        nullable, required = _NUMERIC[table]
        for col in nullable + required:
            allowed = "('integer', 'real', 'null')" if col in nullable else "('integer', 'real')"
            row = self.con.execute(f"SELECT step, typeof({col}) FROM {table} WHERE run_id = ? "
                                   f"AND typeof({col}) NOT IN {allowed} LIMIT 1",
                                   (run_id,)).fetchone()
            if row is not None:
                raise RecordError(f"run {run_id} in {self.path}: {table}.{col} of step {row[0]} "
                                  f"is {row[1]}, not a number")

    def steps(self, run_id: int) -> dict[str, np.ndarray]:
        """The run's per-step metrics as columns."""
        self._check_numbers("steps", run_id)
        cur = self.con.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
        # SQLite stores a NaN as NULL: every column is numeric, so NULL reads back as NaN
        # (a regression run's batch accuracy, which is None, reads back as NaN too).
        return {c: np.array([np.nan if r[i] is None else r[i] for r in rows])
                for i, c in enumerate(cols)}

    def _dicts(self, table: str, run_id: int, order: str) -> list[dict]:
        """The run's rows of ``table`` as dicts, ordered by ``order`` (a fixed column list)."""
        if table in _NUMERIC:
            self._check_numbers(table, run_id)
        cur = self.con.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}",
                               (run_id,))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def epochs(self, run_id: int) -> list[dict]:
        """The run's per-epoch evaluations."""
        return self._dicts("epochs", run_id, "epoch")

    def site_events(self, run_id: int) -> list[dict]:
        """The run's per-step, per-site event counts, by step and site name; ``seq`` orders
        a step's rows as its casts first reported (the forward pass in the order it ran, then
        the backward pass in its order)."""
        self._check_numbers("site_events", run_id)
        cur = self.con.execute("SELECT *, rowid AS seq FROM site_events WHERE run_id = ? "
                               "ORDER BY step, site, role, direction", (run_id,))
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        # seq as the rank within the step (rowids differ between otherwise identical runs)
        by_step: dict[int, list[dict]] = {}
        for d in rows:
            by_step.setdefault(d["step"], []).append(d)
        for step_rows in by_step.values():
            for rank, d in enumerate(sorted(step_rows, key=lambda d: d["seq"])):
                d["seq"] = rank
        return rows

    def scales(self, run_id: int) -> list[dict]:
        """The run's per-step, per-site scales of a per-site scaler."""
        return self._dicts("scales", run_id, "step, site")

    def notes(self, run_id: int) -> list[dict]:
        """The run's notes (see :meth:`add_note`), in step order."""
        if not self._has_table("notes"):
            return []
        return self._dicts("notes", run_id, "step, rowid")

    def histograms(self, run_id: int) -> list[dict]:
        """The run's recorded histograms, ``counts`` decoded to int64 arrays."""
        rows = self._dicts("histograms", run_id, "step, site, role, direction")
        for d in rows:
            counts = d["counts"]
            if not isinstance(counts, bytes) or len(counts) % 8:
                what = "NULL" if counts is None else (
                    f"{len(counts)} bytes, not whole int64 counts" if isinstance(counts, bytes)
                    else type(counts).__name__)
                raise RecordError(f"run {run_id} in {self.path}: its histogram of step "
                                  f"{d['step']} at {d['site']} (histograms.counts) is {what}")
            d["counts"] = np.frombuffer(counts, "<i8").copy()
        return rows


#: The kind of the note a run resumed under other settings than it was recorded with carries
#: (its steps from there on may differ in their bits from an uninterrupted run's).
RESUME_SETTINGS_NOTE = "resume-settings"

#: ``table -> (numeric columns that may be NULL, numeric columns never NULL)`` as fpsim writes
#: them (a NaN is stored as NULL, so float metrics may be NULL; counts and steps may not).
_NUMERIC = {
    "steps": (("loss", "accuracy", "lr", "loss_scale", "grad_underflow_rate", "seconds"),
              ("step", "skipped", "nonfinite")),
    "epochs": (("train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"),
               ("epoch", "step")),
    "site_events": (("scale", "shadow_underflow", "shadow_total"),
                    ("step", "total", "underflow", "subnormal", "overflow", "nan", "inexact",
                     "zeros")),
    "scales": (("carried", "local"), ("step",)),
    "histograms": ((), ("step", "k_min", "zeros", "infs", "nans")),
    "notes": ((), ("step", "count")),
}


#: The key under which a config value that is a Python object (a scaler or cast instance given
#: directly) is recorded: its repr, for the reader; such a run cannot be rebuilt from the record.
PYTHON_OBJECT = "python-object"


def _python_object(obj) -> dict:
    """JSON stand-in for a config value that is a Python object."""
    return {PYTHON_OBJECT: repr(obj)}


def has_python_objects(value) -> bool:
    """True when a recorded config holds a :data:`PYTHON_OBJECT` stand-in anywhere."""
    if isinstance(value, dict):
        return PYTHON_OBJECT in value or any(has_python_objects(v) for v in value.values())
    if isinstance(value, list):
        return any(has_python_objects(v) for v in value)
    return False
