"""Tests for labkit.store: labels survive kills, never duplicate, export and agree as computed by hand."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from labkit.store import LabelStore, cohen_kappa, work_units

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cands(n=3, k=3):
    return [{"id": f"p{i}", "prompt": f"prompt {i}", "task": None, "gen": {},
             "responses": [f"p{i} response {j}" for j in range(k)]} for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite") as s:
        yield s


def test_store_is_wal_and_full_sync(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_add_label_is_idempotent_and_normalises_pairs(store):
    first = store.add_label("p0", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    # A double click, and the same pair given the other way round, are the same unit.
    assert store.add_label("p0", "alice", "pair", {"a": 0, "b": 1, "choice": "a"}) == first
    assert store.add_label("p0", "alice", "pair", {"a": 1, "b": 0, "choice": "tie"}) == first
    assert store.count() == 1
    # (1, 0, "a") is stored as (0, 1, "b"): response 1 wins either way.
    store.add_label("p1", "alice", "pair", {"a": 1, "b": 0, "choice": "a"})
    assert store.labels(item_id="p1")[0].payload == {"a": 0, "b": 1, "choice": "b"}
    # Other annotators and kinds are other units.
    store.add_label("p0", "bob", "pair", {"a": 0, "b": 1, "choice": "b"})
    store.add_label("p0", "alice", "rank", {"order": [2, 0, 1]}, rationale="2 is right")
    assert store.count() == 4 and store.count(annotator="alice") == 3 and store.count(kind="rank") == 1
    assert store.labels(kind="rank")[0].rationale == "2 is right"
    assert store.annotators() == ["alice", "bob"]


def test_arena_labels_are_pairs_that_remember_the_left_side(store):
    # (1, 0) with 1 shown on the left is stored one way round, choice flipped, left kept as the model index.
    first = store.add_label("q0", "alice", "arena", {"a": 1, "b": 0, "choice": "a", "left": 1})
    lab = store.labels(kind="arena")[0]
    assert lab.payload == {"a": 0, "b": 1, "choice": "b", "left": 1} and lab.unit == ("q0", 0, 1)
    assert store.add_label("q0", "alice", "arena", {"a": 0, "b": 1, "choice": "tie", "left": 0}) == first
    assert store.undo_last("alice", kind="arena").id == first and store.count(kind="arena") == 0
    with pytest.raises(ValueError, match="left must be a"):
        store.add_label("q0", "alice", "arena", {"a": 0, "b": 1, "choice": "a", "left": 2})
    with pytest.raises(ValueError):
        work_units(cands(), "arena")  # the arena builds its own units


@pytest.mark.parametrize("kind,payload", [
    ("pair", {"a": 0, "b": 0, "choice": "a"}),
    ("pair", {"a": 0, "b": 1, "choice": "maybe"}),
    ("rank", {"order": [1, 1]}),
    ("rank", {"order": [0]}),
    ("vote", {"order": [0, 1]}),
])
def test_add_label_rejects_bad_payloads(store, kind, payload):
    with pytest.raises(ValueError):
        store.add_label("p0", "alice", kind, payload)
    assert store.count() == 0


def test_undo_marks_the_last_label_and_allows_relabelling(store):
    store.add_label("p0", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    second = store.add_label("p1", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    store.add_label("p0", "bob", "pair", {"a": 0, "b": 1, "choice": "b"})
    undone = store.undo_last("alice")
    assert undone.id == second and undone.undone_at is not None
    assert [lab.item_id for lab in store.labels(annotator="alice")] == ["p0"]
    assert len(store.labels(annotator="alice", include_undone=True)) == 2
    again = store.add_label("p1", "alice", "pair", {"a": 0, "b": 1, "choice": "b"})
    assert again != second and store.labels(item_id="p1")[0].payload["choice"] == "b"
    assert store.undo_last("alice", kind="rank") is None
    assert store.undo_last("carol") is None


def test_next_item_resumes_after_the_last_label(store):
    units = work_units(cands(n=4, k=2), "pair")  # one pair per item
    assert store.next_item(units, "alice") == 0
    store.add_label("p0", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    store.add_label("p2", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})  # jumped over p1
    assert store.next_item(units, "alice") == 3            # right after where she stopped
    store.add_label("p3", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    assert store.next_item(units, "alice") == 1            # then wraps round to the gap
    assert store.next_item(units, "alice", skip={units[1]}) == 1  # only skipped left: still offered
    assert store.next_item(units, "alice", after=units[2]) == 1  # or after a given unit (a skip)
    store.add_label("p1", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    assert store.next_item(units, "alice") is None
    assert store.next_item(units, "bob") == 0
    rank_units = work_units(cands(n=3), "rank")
    store.add_label("p1", "alice", "rank", {"order": [0, 1, 2]})
    assert store.next_item(rank_units, "alice") == 2


def test_work_units():
    assert work_units(cands(n=2, k=3), "pair") == [("p0", 0, 1), ("p0", 0, 2), ("p0", 1, 2),
                                                    ("p1", 0, 1), ("p1", 0, 2), ("p1", 1, 2)]
    assert work_units(cands(n=2, k=3), "rank") == [("p0", None, None), ("p1", None, None)]
    with pytest.raises(ValueError):
        work_units(cands(), "vote")


def test_export_pairs_from_rankings_and_pairs(store, tmp_path):
    c = cands(n=4, k=4)
    c[3]["responses"][1] = c[3]["responses"][0]  # two identical texts: no preference to learn
    store.add_label("p0", "alice", "rank", {"order": [2, 0, 3, 1]})           # 6 pairs
    store.add_label("p1", "alice", "pair", {"a": 0, "b": 1, "choice": "b"})   # 1 pair
    store.add_label("p1", "alice", "pair", {"a": 0, "b": 2, "choice": "tie"})
    store.add_label("p1", "alice", "pair", {"a": 1, "b": 2, "choice": "both_bad"})
    store.add_label("p2", "ai:constitution", "pair", {"a": 2, "b": 3, "choice": "a"})  # 1 pair
    store.add_label("p3", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})   # identical texts
    store.add_label("gone", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})  # unknown item
    store.add_label("p3", "bob", "rank", {"order": [0, 7]})                   # p3 has no response 7
    store.add_label("p2", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})
    store.undo_last("alice")                                                    # does not count
    out = tmp_path / "03_preferences" / "pairs.jsonl"
    stats = store.export_pairs(c, out)
    assert stats == {"pairs": 8, "labels": 8, "ties": 1, "both_bad": 1, "identical": 1,
                     "unknown_item": 1, "invalid": 1, "by_annotator": {"alice": 7, "ai:constitution": 1}}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    r = c[0]["responses"]
    ranked = [(x["chosen"], x["rejected"]) for x in rows if x["prompt"] == "prompt 0"]
    assert ranked == [(r[2], r[0]), (r[2], r[3]), (r[2], r[1]), (r[0], r[3]), (r[0], r[1]), (r[3], r[1])]
    assert {"prompt": "prompt 1", "chosen": "p1 response 1", "rejected": "p1 response 0"} in rows
    assert os.listdir(out.parent) == ["pairs.jsonl"]  # the temp file was renamed, nothing left over
    only_ai = store.export_pairs(c, out, annotators=["ai:constitution"])
    assert only_ai["pairs"] == 1 and len(out.read_text().splitlines()) == 1


def test_a_failed_export_leaves_the_old_file(store, tmp_path, monkeypatch):
    out = tmp_path / "pairs.jsonl"
    out.write_text("old\n")
    store.add_label("p0", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.export_pairs(cands(), out)
    assert out.read_text() == "old\n"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no half-written leftovers


def test_cohen_kappa_by_hand():
    # 10 judgments: agree on a 4x, on b 3x; disagree 3x.  p_o = 0.7.
    # Marginals: X says a 6/10, b 4/10; Y says a 5/10, b 5/10.
    # p_e = 0.6*0.5 + 0.4*0.5 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    pairs = [("a", "a")] * 4 + [("a", "b")] * 2 + [("b", "b")] * 3 + [("b", "a")]
    po, kappa = cohen_kappa(pairs)
    assert po == pytest.approx(0.7) and kappa == pytest.approx(0.4)
    assert cohen_kappa([("a", "a")] * 3) == (1.0, None)  # one category only: kappa undefined


def test_agreement_between_annotators(store):
    x = ["a"] * 4 + ["a"] * 2 + ["b"] * 3 + ["b"]   # the same 10 judgments as above
    y = ["a"] * 4 + ["b"] * 2 + ["b"] * 3 + ["a"]
    for i, (cx, cy) in enumerate(zip(x, y)):
        store.add_label(f"p{i}", "alice", "pair", {"a": 0, "b": 1, "choice": cx})
        store.add_label(f"p{i}", "ai:constitution", "pair", {"a": 0, "b": 1, "choice": cy})
    store.add_label("p99", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})  # nobody else judged it
    (res,) = store.agreement()
    assert res["annotators"] == ("ai:constitution", "alice") and res["n"] == 10
    assert res["percent_agreement"] == pytest.approx(70.0) and res["kappa"] == pytest.approx(0.4)
    # A ranking counts as pairwise judgments: order [1, 0] says "b" on the pair (0, 1).
    store.add_label("p0", "bob", "rank", {"order": [1, 0]})
    bob = [r for r in store.agreement() if "bob" in r["annotators"]]
    assert [(r["annotators"], r["n"], r["percent_agreement"]) for r in bob] == [
        (("ai:constitution", "bob"), 1, 0.0), (("alice", "bob"), 1, 0.0)]


# -- crashes and concurrency: real processes ---------------------------------------------

WORKER = textwrap.dedent("""
    import sys
    from labkit.store import LabelStore
    path, annotator, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = LabelStore(path)
    print("ready", flush=True)
    for i in range(n):
        choice = "ab"[i % 2]
        label_id = store.add_label(f"p{i}", annotator, "pair", {"a": 0, "b": 1, "choice": choice})
        print(f"p{i} {label_id}", flush=True)   # acknowledged only after add_label returned
""")


def start_worker(path, annotator, n):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", WORKER, str(path), annotator, str(n)],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_acknowledged_labels_survive_sigkill(tmp_path):
    path = tmp_path / "labels.sqlite"
    proc = start_worker(path, "alice", 100_000)
    assert proc.stdout.readline().strip() == "ready"
    acked = []
    for line in proc.stdout:
        acked.append(tuple(line.split()))
        if len(acked) == 150:
            proc.send_signal(signal.SIGKILL)  # mid-stream: it is busy writing the next labels
            break
    # Lines it printed before it died were acknowledged too.
    acked += [tuple(line.split()) for line in proc.stdout if line.strip()]
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL and len(acked) >= 150
    raw = sqlite3.connect(path)  # a plain connection: the file is healthy on its own
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with LabelStore(path) as store:
        stored = {(lab.item_id, str(lab.id)) for lab in store.labels()}
        assert set(acked) <= stored
        assert len(stored) >= len(acked)  # at most the one in flight was also written
        store.add_label("after", "alice", "pair", {"a": 0, "b": 1, "choice": "a"})  # still writable


def test_two_processes_label_the_same_units_at_once(tmp_path):
    path = tmp_path / "labels.sqlite"
    n = 60
    # Same annotator in both (a person with two tabs open) and one annotator each.
    procs = [start_worker(path, "shared", n), start_worker(path, "shared", n),
             start_worker(path, "p0", n), start_worker(path, "p1", n)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    acked = [dict(line.split() for line in out.splitlines()[1:]) for out in outs]
    with LabelStore(path) as store:
        for name in ("shared", "p0", "p1"):
            labels = store.labels(annotator=name)
            assert sorted(lab.item_id for lab in labels) == sorted(f"p{i}" for i in range(n))
        # Both "shared" writers were told the same id for every unit: nothing lost, nothing twice.
        assert acked[0] == acked[1] == {lab.item_id: str(lab.id) for lab in store.labels(annotator="shared")}
        assert store.count() == 3 * n
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
