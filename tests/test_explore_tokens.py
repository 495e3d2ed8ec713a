"""Tests for labkit.explore_tokens: the tokenizer explorer and the token-level view of what RLHF changed,
driven through the messages the browser sends."""

import json
import math
import shutil

import pytest

from labkit import explore_tokens, ppo_eval
from labkit.explore import ExplorerWidget, load_policy
from labkit.explore_tokens import TokenChanges, Tokenizers
from labkit.runs import Run

XSS = "<script>window.__xss=1</script>"


def widget(explorer) -> ExplorerWidget:
    explorer.start()
    return ExplorerWidget(explorer)


def sections(view, kind):
    return [s for s in view["sections"] if s["type"] == kind]


@pytest.fixture
def run_copy(explore_run, tmp_path):
    """A copy of the shared run (the tokenizer explorer writes stage 1's extra tokenizers into it)."""
    shutil.copytree(explore_run, tmp_path / "r")
    return Run.at(tmp_path / "r")


def test_token_kl_lists_the_top_tokens_of_both_models(explore_run):
    r = Run.at(explore_run)
    policy, tok = load_policy(r, "ppo")
    ref, _ = load_policy(r, "sft")
    rows = ppo_eval.token_kl(policy, ref, tok, "What is 2 plus 3?", "5", top_k=5)
    assert [len(row["top"]) for row in rows] == [5] * len(rows) == [len(row["ref_top"]) for row in rows]
    for row in rows:
        for key, logp in (("top", row["logprob"]), ("ref_top", row["ref_logprob"])):
            probs = [p for _, p in row[key]]
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
            if row["token"] in [t for t, _ in row[key]]:  # the token's own probability is the same number
                assert dict(row[key])[row["token"]] == pytest.approx(math.exp(logp), rel=1e-4)
            else:
                assert math.exp(logp) <= probs[-1] + 1e-6
    assert "top" not in ppo_eval.token_kl(policy, ref, tok, "What is 2 plus 3?", "5")[0]


def test_token_view_colours_each_token_by_the_log_ratio(explore_run):
    w = widget(TokenChanges(Run.at(explore_run)))
    ex = w.explorer
    assert ex.values["response"] == ex.values["response"].strip() and ex.rows  # sampled from PPO on opening
    row = sections(w.view, "tokens")[0]["rows"][0]
    assert len(row["chips"]) == len(ex.rows)
    for chip, r in zip(row["chips"], ex.rows):
        assert chip["text"] == r["token"] and chip["heat"] == pytest.approx(max(-1, min(1, r["k1"] / 3)))
        assert f"ppo: p={math.exp(r['logprob']):.3f}" in chip["detail"]
        assert f"SFT: p={math.exp(r['ref_logprob']):.3f}" in chip["detail"]
        assert "ppo top-5: " in chip["detail"] and "SFT top-5: " in chip["detail"]
    kl = sum(r["kl"] for r in ex.rows)
    assert row["note"].startswith(f"\u03a3 KL {kl:.3f} nats over {len(ex.rows)} tokens")
    spent = sections(w.view, "table")[0]
    assert [float(x[2]) for x in spent["rows"]] == sorted((float(x[2]) for x in spent["rows"]), reverse=True)


def test_token_view_controls(explore_run):
    w = widget(TokenChanges(Run.at(explore_run)))
    ex = w.explorer
    assert [c["value"] for c in w.view["controls"] if c["id"] == "policy"] == ["ppo"]
    assert [o[0] for c in w.view["controls"] if c["id"] == "policy" for o in c["options"]] == \
        ["ppo", "dpo", "rloo", "rloo_verifier"]
    first = ex.values["response"]
    w.handle({"action": "click", "id": "sample_policy"})       # a new draw each click
    assert ex.draws == 2
    w.handle({"action": "set", "id": "response", "value": XSS})  # typed: shown token by token, as text
    w.handle({"action": "set", "id": "policy", "value": "dpo"})
    w.handle({"action": "click", "id": "show"})
    chips = sections(w.view, "tokens")[0]["rows"][0]["chips"]
    assert "".join(c["text"] for c in chips).startswith("<script>") and "dpo against SFT" in w.view["message"]
    w.handle({"action": "click", "id": "sample_sft"})
    assert ex.values["response"] != XSS and w.view["controls"][2]["value"] == ex.values["response"]
    w.handle({"action": "set", "id": "response", "value": "word " * 200})
    w.handle({"action": "click", "id": "show"})
    assert w.view["error"] and "the model reads at most 128: shorten them" in w.view["message"]
    assert first


def test_token_view_needs_sft_and_the_policy(explore_run, tmp_path):
    shutil.copytree(explore_run, tmp_path / "r")
    m = json.loads((tmp_path / "r" / "run.json").read_text())
    for s in ("ppo", "compare"):
        m["stages"].pop(s)
    (tmp_path / "r" / "run.json").write_text(json.dumps(m))
    view = explore_tokens.rlhf_tokens(run=tmp_path / "r", interactive=True).view
    assert view["message"] == f"the token view needs ppo, and {tmp_path / 'r'} holds pretrain, sft, preferences, reward"


def test_token_view_static_table(explore_run):
    table = explore_tokens.rlhf_tokens(run=explore_run, interactive=False)
    assert list(table["family"]) == ["harmful", "unanswerable", "benign"]
    assert (table["sum_kl"] >= 0).all() and list(table.columns)[-3:] == ["costliest_token", "its_kl", "its_log_ratio"]


def test_tokenizer_explorer_trains_the_other_two_once(run_copy, monkeypatch):
    w = widget(Tokenizers(run_copy))
    assert list(w.explorer.toks) == ["bpe", "wordpiece", "unigram"]
    assert w.view["message"].startswith("trained wordpiece and unigram on stage 1's")
    saved = run_copy.path / "01_pretrain" / "tokenizers"
    source = json.loads((saved / "unigram" / "source.json").read_text())
    assert source["kind"] == "unigram" and source["vocab_size"] == 512
    assert source["data_hash"] == json.loads((run_copy.path / "01_pretrain" / "data.json").read_text())["data_hash"]

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(explore_tokens, "train_tokenizer", no_training)
    again = Tokenizers(run_copy)                                 # kept: read back, not trained
    assert again.message == "" and len(again.toks["wordpiece"]) == len(w.explorer.toks["wordpiece"])


def test_tokenizer_explorer_shows_tokens_counts_and_next_tokens(run_copy):
    w = widget(Tokenizers(run_copy))
    w.handle({"action": "set", "id": "text", "value": "Mara gave the kite to Tobin."})
    rows = sections(w.view, "tokens")[0]["rows"]
    assert [r["label"] for r in rows] == ["bpe (stage 1's)", "wordpiece", "unigram"]
    counts = sections(w.view, "table")[0]
    for row, (kind, tok) in zip(counts["rows"], w.explorer.toks.items()):
        ids = tok("Mara gave the kite to Tobin.", add_special_tokens=False)["input_ids"]
        assert row[:3] == [kind, len(ids), 28] and row[3] == f"{28 / len(ids):.2f}"
        chips = rows[list(w.explorer.toks).index(kind)]["chips"]
        assert [c["detail"] for c in chips] == [f"id {i} \u00b7 token {p!r}" for i, p in
                                                zip(ids, tok.convert_ids_to_tokens(ids))]
    w.handle({"action": "set", "id": "prefix", "value": "One morning, Mara"})
    probe = sections(w.view, "table")[1]
    probs = [float(r[2].rstrip("%")) for r in probe["rows"]]
    assert len(probs) == 10 and probs == sorted(probs, reverse=True) and "'One morning, Mara'" in probe["title"]
    w.handle({"action": "set", "id": "prefix", "value": ""})
    assert sections(w.view, "text")[0]["text"] == "type a prefix for the next-token probe"
    w.handle({"action": "set", "id": "text", "value": "bad \udc80"})
    assert w.view["error"] and "text is not valid UTF-8" in w.view["message"]
    assert w.explorer.values["text"] == "Mara gave the kite to Tobin."


def test_tokenizer_explorer_needs_stage_1(tmp_path):
    (tmp_path / "r").mkdir()
    view = explore_tokens.tokenizers(run=tmp_path / "r", interactive=True).view
    assert view["message"] == f"the tokenizer explorer needs stage 1's tokenizer, and {tmp_path / 'r'} holds no completed stage"


def test_tokenizer_static_table(run_copy):
    table = explore_tokens.tokenizers(run=run_copy, interactive=False)
    assert list(table["tokenizer"]) == ["bpe", "wordpiece", "unigram"] * 2
    assert (table["tokens"] > 0).all()
