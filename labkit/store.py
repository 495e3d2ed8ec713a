"""A durable, crash-safe store of preference labels (stage 3, and the explorers' arena).

One SQLite file per store; a label acknowledged by ``add_label`` survives a killed kernel (WAL,
``synchronous=FULL``); one live label per work unit (a second one for the same unit returns the
first's id); two processes can label at once; ``undo_last`` marks a label undone, never deletes.
A *work unit* is what one label answers: ``(item_id, a, b)`` in pair mode, ``(item_id, None, None)``
in rank mode. Kind "arena" (``labkit.arena``) is a pair whose a and b are two policies, its payload
also saying which one was shown on the left (``"left"``). How and why: docs/how-it-works.md, "The label store".

    store = LabelStore("labels.sqlite")
    store.add_label("p1", "alice", "pair", {"a": 0, "b": 1, "choice": "b"})
    store.export_pairs(candidates, "pairs.jsonl")   # TRL prompt/chosen/rejected
    store.agreement()                               # percent agreement, Cohen's kappa

The file must live on a local disk: WAL does not work over network file systems.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import sqlite3
import threading
import warnings
from dataclasses import dataclass

from labkit.runs import write_jsonl_atomic

KINDS = ("pair", "rank", "arena")
PAIR_KINDS = ("pair", "arena")  # labels that compare two responses a and b
CHOICES = ("a", "b", "tie", "both_bad")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids order labels in time
    item_id    TEXT NOT NULL,                      -- the candidate set (prompt) id
    annotator  TEXT NOT NULL,                      -- a person's name, or "ai:<judge>"
    kind       TEXT NOT NULL CHECK (kind IN ('pair', 'rank', 'arena')),
    a          INTEGER NOT NULL,                   -- pair: smaller response index, rank: -1
    b          INTEGER NOT NULL,                   -- pair: larger response index,  rank: -1
    payload    TEXT NOT NULL,                      -- JSON, see the module docstring
    rationale  TEXT,
    created_at TEXT NOT NULL,                      -- ISO 8601, UTC
    undone_at  TEXT                                -- set by undo, NULL while the label counts
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_label
    ON labels (item_id, annotator, kind, a, b) WHERE undone_at IS NULL;
"""


@dataclass(frozen=True)
class Label:
    """One stored label (a row of the `labels` table)."""

    id: int
    item_id: str
    annotator: str
    kind: str
    payload: dict
    rationale: str | None
    created_at: str
    undone_at: str | None = None

    @property
    def unit(self) -> tuple:
        """The work unit this label answers: (item_id, a, b) or (item_id, None, None)."""
        if self.kind in PAIR_KINDS:
            return (self.item_id, self.payload["a"], self.payload["b"])
        return (self.item_id, None, None)


def work_units(candidates: list[dict], mode: str) -> list[tuple]:
    """The units to label, in order: every pair (a < b) of each item's responses, or one ranking per item."""
    if mode not in ("pair", "rank"):  # the arena builds its own units (labkit.arena)
        raise ValueError(f"mode must be 'pair' or 'rank', got {mode!r}")
    units = []
    for cand in candidates:
        k = len(cand["responses"])
        if mode == "pair":
            units += [(cand["id"], a, b) for a, b in itertools.combinations(range(k), 2)]
        elif k >= 2:
            units.append((cand["id"], None, None))
    return units


def _normalise(kind: str, payload: dict) -> tuple[int, int, dict]:
    """Validate a payload; return the (a, b) key columns and the canonical payload."""
    if kind in PAIR_KINDS:
        a, b, choice = int(payload["a"]), int(payload["b"]), payload["choice"]
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        if a == b or min(a, b) < 0:
            raise ValueError(f"a pair needs two different response indices, got a={a} b={b}")
        left = int(payload.get("left", a))
        if kind == "arena" and left not in (a, b):
            raise ValueError(f"left must be a ({a}) or b ({b}), got {left}")
        if a > b:  # store every pair one way round so (0,1) and (1,0) are the same unit
            a, b = b, a
            choice = {"a": "b", "b": "a"}.get(choice, choice)
        out = {"a": a, "b": b, "choice": choice}
        return a, b, {**out, "left": left} if kind == "arena" else out
    if kind == "rank":
        order = [int(i) for i in payload["order"]]
        if len(order) < 2 or len(set(order)) != len(order) or min(order) < 0:
            raise ValueError(f"a ranking needs two or more distinct response indices, got {order}")
        return -1, -1, {"order": order}
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class LabelStore:
    """Preference labels in one SQLite file; safe to share between processes.

    `path`: the database file (created with its folder if missing).
    `timeout_s`: how long a write waits for another process's write to finish.
    """

    def __init__(self, path, timeout_s: float = 30.0):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so every write is exactly one transaction.
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()  # one connection, possibly used from widget callbacks
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        if self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            warnings.warn(f"{self.path}: SQLite could not use WAL here (a network file system?); "
                          "labels are still safe, but two processes will block each other more", stacklevel=2)
        # FULL (not WAL's usual NORMAL): fsync the WAL on every commit, so an
        # acknowledged label survives power loss too, not only a killed process.
        self._db.execute("PRAGMA synchronous = FULL")
        with self._write() as db:
            # Not executescript(): it would COMMIT our open transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    # -- plumbing -------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self):
        """One write transaction: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        with self._lock:
            # IMMEDIATE takes the database write lock now, so read-then-write
            # steps (add_label's read-back, undo_last) cannot interleave with
            # another process's write; busy_timeout makes the other side wait.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _label(row) -> Label:
        return Label(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])

    _COLUMNS = "id, item_id, annotator, kind, payload, rationale, created_at, undone_at"

    def close(self):
        """Close the connection (the file stays consistent whether or not you call this)."""
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing ----------------------------------------------------------------

    def add_label(self, item_id: str, annotator: str, kind: str, payload: dict,
                  rationale: str | None = None) -> int:
        """Store one label and return its id once it is committed to disk.

        If this annotator already has a live label for the same unit, nothing is
        written and the existing label's id is returned (first label wins).
        """
        if not annotator:
            raise ValueError("annotator must be a non-empty name")
        a, b, payload = _normalise(kind, payload)
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO labels (item_id, annotator, kind, a, b, payload, rationale, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (str(item_id), annotator, kind, a, b, json.dumps(payload), rationale, _now()))
            # Read back inside the same transaction: the row is ours or the one that beat us.
            (label_id,) = db.execute(
                "SELECT id FROM labels WHERE item_id=? AND annotator=? AND kind=? AND a=? AND b=?"
                " AND undone_at IS NULL", (str(item_id), annotator, kind, a, b)).fetchone()
        return label_id

    def undo_last(self, annotator: str, kind: str | None = None) -> Label | None:
        """Mark this annotator's most recent live label (of `kind`, if given) undone; return it, or None."""
        with self._write() as db:
            sql = f"SELECT {self._COLUMNS} FROM labels WHERE annotator=? AND undone_at IS NULL"
            args = [annotator]
            if kind is not None:
                sql, args = sql + " AND kind=?", args + [kind]
            row = db.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
            if row is None:
                return None
            when = _now()
            db.execute("UPDATE labels SET undone_at=? WHERE id=?", (when, row[0]))
        return self._label(row[:7] + (when,))

    # -- reading ----------------------------------------------------------------

    def labels(self, annotator: str | None = None, kind: str | None = None,
               item_id: str | None = None, include_undone: bool = False) -> list[Label]:
        """Labels in the order they were given, optionally filtered."""
        where, args = [], []
        for column, value in (("annotator", annotator), ("kind", kind), ("item_id", item_id)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if not include_undone:
            where.append("undone_at IS NULL")
        sql = f"SELECT {self._COLUMNS} FROM labels"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._label(r) for r in self._query(sql + " ORDER BY id", args)]

    def count(self, annotator: str | None = None, kind: str | None = None) -> int:
        """How many live labels (optionally of one annotator / kind)."""
        return len(self.labels(annotator=annotator, kind=kind))

    def annotators(self) -> list[str]:
        """Everyone with at least one live label, sorted."""
        return [r[0] for r in self._query(
            "SELECT DISTINCT annotator FROM labels WHERE undone_at IS NULL ORDER BY annotator")]

    def next_item(self, units: list[tuple], annotator: str, kind: str | None = None,
                  skip: frozenset | set = frozenset(), after: tuple | None = None) -> int | None:
        """Index in `units` of the next unit this annotator should label, or None when all are done.

        Resumes exactly where the annotator stopped: the first unlabelled unit
        after the one they labelled last (wrapping round to earlier gaps), or
        after the unit `after` if given. `kind` defaults to the kind the units
        describe. Units in `skip` (skipped this session) come last, once
        nothing else is left.
        """
        if not units:
            return None
        kind = kind or ("pair" if units[0][1] is not None else "rank")
        labelled = self.labels(annotator=annotator, kind=kind)
        done = {lab.unit for lab in labelled}
        position = {u: i for i, u in enumerate(units)}
        if after is None and labelled:
            after = labelled[-1].unit
        start = position.get(after, -1) + 1
        ring = [(start + k) % len(units) for k in range(len(units))]
        todo = [i for i in ring if units[i] not in done]
        fresh = [i for i in todo if units[i] not in skip]
        return (fresh or todo or [None])[0]

    # -- export -----------------------------------------------------------------

    def export_pairs(self, candidates: list[dict], path, annotators: list[str] | None = None) -> dict:
        """Write TRL preference pairs `{"prompt", "chosen", "rejected"}` to `path` (JSONL), atomically.

        A ranking of K becomes all K*(K-1)/2 pairs. Ties and "both_bad" carry no
        preference and are skipped, as are pairs whose two texts are identical;
        all are counted in the returned stats. `annotators` restricts the export
        (default: everyone). Returns counts: pairs written, labels read, ties,
        both_bad, identical, unknown_item (labels whose item is not in
        `candidates`), invalid (labels naming a response the item does not
        have), and pairs per annotator.
        """
        by_id = {c["id"]: c for c in candidates}
        stats = {"pairs": 0, "labels": 0, "ties": 0, "both_bad": 0, "identical": 0,
                 "unknown_item": 0, "invalid": 0, "by_annotator": {}}
        rows = []
        for lab in self.labels():
            if annotators is not None and lab.annotator not in annotators:
                continue
            stats["labels"] += 1
            cand = by_id.get(lab.item_id)
            if cand is None:
                stats["unknown_item"] += 1
                continue
            prefs = _preferences(lab)
            if any(j >= len(cand["responses"]) for (_, j), _ in prefs):  # candidates changed under the labels
                stats["invalid"] += 1
                continue
            for (i, j), choice in prefs:
                if choice in ("tie", "both_bad"):
                    stats["ties" if choice == "tie" else "both_bad"] += 1
                    continue
                win, lose = (i, j) if choice == "a" else (j, i)
                chosen, rejected = cand["responses"][win], cand["responses"][lose]
                if chosen == rejected:
                    stats["identical"] += 1
                    continue
                rows.append({"prompt": cand["prompt"], "chosen": chosen, "rejected": rejected})
                stats["by_annotator"][lab.annotator] = stats["by_annotator"].get(lab.annotator, 0) + 1
        stats["pairs"] = len(rows)
        write_jsonl_atomic(path, rows)
        return stats

    # -- agreement --------------------------------------------------------------

    def agreement(self, annotators: list[str] | None = None) -> list[dict]:
        """Percent agreement and Cohen's kappa for every two annotators who judged the same pairs.

        Pair labels and rankings are both reduced to pairwise judgments
        (item, a, b) -> "a"|"b"|"tie"|"both_bad", so a person's rankings can be
        compared with a judge's pair labels. Returns one dict per annotator pair
        with `annotators`, `n` (shared judgments), `percent_agreement` (0-100)
        and `kappa` (None when undefined: both used one identical category).
        """
        judged: dict[str, dict] = {}
        for lab in self.labels():
            if annotators is None or lab.annotator in annotators:
                judged.setdefault(lab.annotator, {}).update(
                    {(lab.item_id, i, j): c for (i, j), c in _preferences(lab)})
        out = []
        for x, y in itertools.combinations(sorted(judged), 2):
            shared = sorted(set(judged[x]) & set(judged[y]))
            if shared:
                pairs = [(judged[x][u], judged[y][u]) for u in shared]
                po, kappa = cohen_kappa(pairs)
                out.append({"annotators": (x, y), "n": len(shared),
                            "percent_agreement": 100.0 * po, "kappa": kappa})
        return out


def _preferences(label: Label) -> list[tuple[tuple[int, int], str]]:
    """A label as pairwise judgments ((i, j) with i < j, choice)."""
    if label.kind in PAIR_KINDS:
        return [((label.payload["a"], label.payload["b"]), label.payload["choice"])]
    order = label.payload["order"]
    out = []
    for p, q in itertools.combinations(range(len(order)), 2):  # order[p] is ranked above order[q]
        i, j = order[p], order[q]
        out.append(((i, j), "a") if i < j else ((j, i), "b"))
    return out


def cohen_kappa(pairs: list[tuple[str, str]]) -> tuple[float, float | None]:
    """(observed agreement, Cohen's kappa) for two raters' categorical judgments.

    kappa = (p_o - p_e) / (1 - p_e), p_e = sum over categories of the product of
    the two raters' marginal frequencies (Cohen 1960).
    """
    n = len(pairs)
    po = sum(x == y for x, y in pairs) / n
    cats = {c for pair in pairs for c in pair}
    pe = sum((sum(x == c for x, _ in pairs) / n) * (sum(y == c for _, y in pairs) / n) for c in cats)
    return po, (None if pe == 1.0 else (po - pe) / (1.0 - pe))
