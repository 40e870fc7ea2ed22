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

A run's rows are committed together with its checkpoint, so after any interruption the
database holds a consistent prefix of the run; :meth:`RunDB.truncate` drops rows beyond the
checkpoint before a resumed run recomputes them.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import sqlite3

import numpy as np

SCHEMA = 2
_HEADER = b"SQLite format 3\x00"

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
CREATE TABLE checkpoints (run_id INTEGER PRIMARY KEY, step INTEGER, epoch INTEGER,
    created TEXT, state BLOB);
"""
_STEP_TABLES = ("steps", "site_events", "histograms", "scales", "notes", "tensor_scales")
#: Every table holding a run's rows (``runs`` first; the others by ``run_id``).
_RUN_TABLES = ("runs", *_STEP_TABLES, "params", "epochs", "checkpoints")
_ADDITIVE_TABLES = _TABLES[_TABLES.index("CREATE TABLE IF NOT EXISTS notes"):
                       _TABLES.index("CREATE TABLE checkpoints")]


class RecordError(ValueError):
    """A database that is not an fpsim run record (foreign, corrupt, newer schema) or a run
    that does not exist."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_existing(path: str) -> None:
    """Raise RecordError unless ``path`` is an fpsim database; never writes to it."""
    with open(path, "rb") as f:
        head = f.read(len(_HEADER))
    if head != _HEADER:
        raise RecordError(f"{path} is not an SQLite database (corrupt or foreign file); "
                          "choose another --db")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(con.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
            con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise RecordError(f"{path} is a damaged SQLite database ({e}); choose another --db") from e
    if meta.get("app") != "fpsim":
        raise RecordError(f"{path} is an SQLite database of another application (tables: "
                          f"{', '.join(sorted(tables)) or 'none'}); fpsim will not write to it")
    if int(meta.get("schema", -1)) != SCHEMA:
        raise RecordError(f"{path} has run-record schema {meta.get('schema')}, this fpsim "
                          f"reads schema {SCHEMA}; use a new --db (or the fpsim that wrote it)")


class RunDB:
    """An fpsim run-record database (created if ``path`` does not exist or is empty).

    Raises:
        RecordError: ``path`` exists but is not an fpsim database; the file is left untouched.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        if not self.path.strip():
            # (SQLite would open a temporary database and every record would be lost; an
            # in-memory one is asked for by name, ":memory:")
            raise RecordError(f"{self.path!r} is not a database file name; give a path such as "
                              "runs.sqlite (or ':memory:' for records that are not kept)")
        if os.path.isdir(self.path):
            raise RecordError(f"{self.path} is a directory, not a run-record database; give a "
                              "file name (e.g. runs.sqlite)")
        fresh = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        if not fresh:
            _check_existing(self.path)
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
            self.con = sqlite3.connect(self.path)
        except (OSError, sqlite3.OperationalError) as e:
            raise RecordError(f"cannot open or create the database {self.path}: {e}") from e
        try:
            self.con.execute("PRAGMA journal_mode=WAL")  # readers (reports) while a run writes
            self.con.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as e:  # e.g. a read-only file in rollback mode
            if fresh:
                raise RecordError(f"cannot create the database {self.path}: {e}") from e
        if fresh:
            with self.con:
                self.con.executescript(_TABLES)
                self.con.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("app", "fpsim"), ("schema", str(SCHEMA))])
        else:  # an additive table: databases written before it existed gain it on first open
            try:
                with self.con:
                    self.con.executescript(_ADDITIVE_TABLES)
            except sqlite3.OperationalError:  # read-only file: reading works without it
                pass

    def close(self):
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- runs --------------------------------------------------------------------------------
    def new_run(self, name: str, config: dict, seed: int, versions: dict,
                study: str | None = None) -> int:
        """Insert a run (status ``running``) and commit; returns its id."""
        with self.con:
            cur = self.con.execute(
                "INSERT INTO runs (name, config, seed, versions, status, created, study) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (name, json.dumps(config, sort_keys=True, default=_python_object), seed,
                 json.dumps(versions), _now(), study))
        return cur.lastrowid

    def run(self, run_id: int) -> dict:
        """The run's row as a dict (config and summary decoded)."""
        row = self.con.execute("SELECT id, name, config, seed, versions, status, created, finished, "
                               "summary, study FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RecordError(f"no run {run_id} in {self.path}")
        keys = ("id", "name", "config", "seed", "versions", "status", "created", "finished",
                "summary", "study")
        d = dict(zip(keys, row))
        for k in ("config", "versions", "summary"):
            d[k] = json.loads(d[k]) if d[k] else None
        return d

    def runs(self, study: str | None = None) -> list[dict]:
        """Every run (of ``study``, if given), oldest first."""
        if study is None:
            ids = self.con.execute("SELECT id FROM runs ORDER BY id").fetchall()
        else:
            ids = self.con.execute("SELECT id FROM runs WHERE study = ? ORDER BY id",
                                   (study,)).fetchall()
        return [self.run(r[0]) for r in ids]

    def studies(self) -> list[str]:
        """Names of the studies in the database, oldest first."""
        return [r[0] for r in self.con.execute(
            "SELECT study FROM runs WHERE study IS NOT NULL GROUP BY study ORDER BY min(id)")]

    def latest_unfinished(self) -> int:
        """Id of the newest run that did not finish."""
        row = self.con.execute("SELECT id FROM runs WHERE status != 'finished' ORDER BY id DESC "
                               "LIMIT 1").fetchone()
        if row is None:
            raise RecordError(f"no unfinished run to resume in {self.path}")
        return row[0]

    def set_status(self, run_id: int, status: str, summary: dict | None = None) -> None:
        """Set a run's status (and summary), committing everything written so far."""
        with self.con:
            self.con.execute("UPDATE runs SET status = ?, summary = COALESCE(?, summary), "
                             "finished = ? WHERE id = ?",
                             (status, None if summary is None else json.dumps(summary),
                              _now() if status == "finished" else None, run_id))

    # -- per-step rows (committed by checkpoint / commit) ---------------------------------------
    def add_step(self, run_id: int, step: int, epoch: int, metrics: dict, summary,
                 shadow: dict | None = None, scales: dict | None = None) -> None:
        """Queue one step's metrics and per-site events (committed by the next :meth:`commit`
        or :meth:`checkpoint`).

        Args:
            shadow: ``site -> (lost, non-zero in float32)`` of the shadow comparison, if made.
            scales: ``site -> (carried, local)`` of a per-site scaler.
        """
        self.con.execute(
            "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, step, epoch, metrics["loss"], metrics["accuracy"], metrics["lr"],
             metrics["loss_scale"], int(metrics["skipped"]), metrics["grad_underflow_rate"],
             metrics["nonfinite"], metrics["seconds"]))
        if summary is not None:
            shadow = shadow or {}

            def sh(site, role, i):
                return shadow[site][i] if role == "activation-grad" and site in shadow else None
            self.con.executemany(
                "INSERT INTO site_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, step, site, role, d, s.total, s.underflow, s.subnormal, s.overflow,
                  s.nan, s.inexact, s.hist_zero, summary.scale(site, role, d),
                  sh(site, role, 0), sh(site, role, 1)) for site, role, d, s in summary.rows()])
        if scales:
            self.con.executemany("INSERT INTO scales VALUES (?, ?, ?, ?, ?)",
                                 [(run_id, step, k, a, s) for k, (a, s) in sorted(scales.items())])

    def add_note(self, run_id: int, step: int, kind: str, message: str, site: str | None = None,
                 count: int = 1) -> None:
        """Queue a note on a step: ``kind`` (``warning``, ``forward-overflow``, ...), the site
        it concerns (or None), a one-line ``message`` and how many times it happened."""
        self.con.execute("INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)",
                         (run_id, step, kind, site, message, int(count)))

    def add_tensor_scales(self, run_id: int, step: int, rows: list[dict]) -> None:
        """Queue one step's scale rows of the scaled casts (see the ``tensor_scales`` table)."""
        self.con.executemany(
            "INSERT INTO tensor_scales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run_id, step, r["site"], r["role"], r["direction"], r["amax"], r["scale"],
              r["alpha"], r["beta"], r["tiles"], r["scale_underflow"], r["scale_overflow"],
              r["nonfinite"]) for r in rows])

    def add_params(self, run_id: int, step: int, flat: np.ndarray) -> None:
        """Queue the parameters after ``step`` steps (``flat``: every parameter's float32 values
        concatenated in ``named_parameters`` order); a row already there is replaced (a resumed
        run writes its starting point again)."""
        blob = np.ascontiguousarray(flat, "<f4").tobytes()
        self.con.execute("INSERT OR REPLACE INTO params VALUES (?, ?, ?)", (run_id, step, blob))

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
        self.con.executemany("INSERT INTO histograms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_epoch(self, run_id: int, epoch: int, step: int, row: dict) -> None:
        """Queue one epoch's evaluation."""
        self.con.execute("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (run_id, epoch, step, row["train_loss"], row["train_accuracy"],
                          row["test_loss"], row["test_accuracy"], row["seconds"]))

    def commit(self) -> None:
        self.con.commit()

    def checkpoint(self, run_id: int, step: int, epoch: int, state: dict) -> None:
        """Replace the run's checkpoint with ``state`` (flat dict of arrays) at ``step`` and
        commit it together with every queued row."""
        buf = io.BytesIO()
        np.savez(buf, **state)
        self.con.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                         (run_id, step, epoch, _now(), buf.getvalue()))
        self.con.commit()

    def load_checkpoint(self, run_id: int) -> tuple[int, dict] | None:
        """``(step, state)`` of the run's checkpoint, or None."""
        row = self.con.execute("SELECT step, state FROM checkpoints WHERE run_id = ?",
                               (run_id,)).fetchone()
        if row is None:
            return None
        with np.load(io.BytesIO(row[1])) as z:
            return row[0], {k: z[k] for k in z.files}

    def truncate(self, run_id: int, step: int) -> None:
        """Delete the run's step rows from ``step`` on and epochs that ended there or later
        (rows a resumed run will write again)."""
        with self.con:
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
        _check_existing(source)  # (ours and sound: the file's tables are read, never run)
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
            with self.con:
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
        with self.con:
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
    def steps(self, run_id: int) -> dict[str, np.ndarray]:
        """The run's per-step metrics as columns."""
        cur = self.con.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
        # SQLite stores a NaN as NULL: every column is numeric, so NULL reads back as NaN
        # (a regression run's batch accuracy, which is None, reads back as NaN too).
        return {c: np.array([np.nan if r[i] is None else r[i] for r in rows])
                for i, c in enumerate(cols)}

    def _dicts(self, table: str, run_id: int, order: str) -> list[dict]:
        """The run's rows of ``table`` as dicts, ordered by ``order`` (a fixed column list)."""
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
            d["counts"] = np.frombuffer(d["counts"], "<i8").copy()
        return rows


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
