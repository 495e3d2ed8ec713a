"""Tests for labkit.data: real-format parsing, line-numbered error reports, one-line errors, offline hub."""
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.data import DataError, LoadReport, load_instructions, load_preferences, load_texts

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def jsonl(path: Path, lines: list) -> Path:
    """Write raw lines: dicts are dumped, strings are written as they are (to make broken lines)."""
    text = "".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) < 400, msg
    return msg


# ---------------------------------------------------------------------------------------------- texts

def test_texts_txt_splits_on_blank_lines(tmp_path):
    p = tmp_path / "book.txt"
    p.write_text("First paragraph,\nwrapped.\n\n\nSecond one.\r\n  \r\nThird.\n", encoding="utf-8")
    assert load_texts(p) == ["First paragraph,\nwrapped.", "Second one.", "Third."]
    assert load_texts(p, max_docs=2) == ["First paragraph,\nwrapped.", "Second one."]


def test_texts_jsonl_json_gz_parquet_and_folder(tmp_path):
    jsonl(tmp_path / "a.jsonl", [{"text": "alpha", "id": 1}, {"text": ""}, {"text": "beta"}])
    (tmp_path / "b.json").write_text(json.dumps([{"body": "gamma"}, {"body": "delta"}]))
    jsonl(tmp_path / "c.jsonl.gz", [{"text": "epsilon"}])
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(b"zeta\n\neta\n"))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["theta", "iota"]}), tmp_path / "e.parquet")

    assert load_texts(tmp_path / "a.jsonl") == ["alpha", "beta"]  # empty documents dropped
    assert load_texts(tmp_path / "b.json", text_field="body") == ["gamma", "delta"]
    assert load_texts(tmp_path / "c.jsonl.gz") == ["epsilon"]
    assert load_texts(tmp_path / "d.txt.gz") == ["zeta", "eta"]
    assert load_texts(tmp_path / "e.parquet") == ["theta", "iota"]
    (tmp_path / "b.json").unlink()
    (tmp_path / "notes.md").write_text("ignored: not a data file")
    assert load_texts(tmp_path) == ["alpha", "beta", "epsilon", "zeta", "eta", "theta", "iota"]
    assert load_texts(str(tmp_path), max_docs=3) == ["alpha", "beta", "epsilon"]


def test_texts_missing_field_names_line_and_fields(tmp_path):
    p = jsonl(tmp_path / "corpus.jsonl", [{"text": "ok"}, "", {"body": "no text here", "id": 3}])
    with pytest.raises(DataError) as e:
        load_texts(p)
    msg = one_line(e)
    assert "corpus.jsonl line 3" in msg and "'text'" in msg and "body, id" in msg and "text_field='body'" in msg
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet row 0: no 'text' field \(fields present: content\)"):
        load_texts(tmp_path / "t.parquet")


@pytest.mark.parametrize("content, expect", [
    (b"", "file is empty"),
    (b"  \n\n \n", "file is empty"),
    (b"hello\x00\x01\x02world", "NUL byte at offset 5"),
    ("caf\u00e9 ol\u00e9".encode("latin-1"), "byte 0xe9 at offset 3"),
    ("hello".encode("utf-16"), "is UTF-16 text"),
])
def test_texts_bad_files_give_one_line_errors(tmp_path, content, expect):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_texts(p)
    msg = one_line(e)
    assert str(p) in msg and expect in msg


def test_texts_more_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="file not found") as e:
        load_texts(tmp_path / "nope.txt")
    one_line(e)
    (tmp_path / "x.txt.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_texts(tmp_path / "x.txt.gz")
    (tmp_path / "model.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="unsupported file type"):
        load_texts(tmp_path / "model.bin")
    (tmp_path / "broken.json").write_text('[{"text": "a"},\n {"text": ]')
    with pytest.raises(DataError, match="invalid JSON at line 2"):
        load_texts(tmp_path / "broken.json")
    (tmp_path / "p.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_texts(tmp_path / "p.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder has no data files"):
        load_texts(tmp_path / "empty")
    jsonl(tmp_path / "blank.jsonl", [{"text": " "}])
    with pytest.raises(DataError, match="no text found"):
        load_texts(tmp_path / "blank.jsonl")
    # a UTF-8 byte-order mark is fine, and gzipped binary is caught after decompression
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert load_texts(tmp_path / "bom.txt") == ["hello"]
    (tmp_path / "bin.txt.gz").write_bytes(gzip.compress(b"ab\x00"))
    with pytest.raises(DataError, match="NUL byte at offset \\(after gunzip\\) 2"):
        load_texts(tmp_path / "bin.txt.gz")


def test_offline_hub_name_fails_fast_with_clear_message():
    # A fresh interpreter, so the offline flag is read at import exactly as a user's session would.
    code = ("import time; t = time.time()\n"
            "from labkit.data import load_texts, DataError\n"
            "try:\n    load_texts('someone/does-not-exist')\n"
            "except DataError as e:\n    print(repr(str(e))); print(time.time() - t)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    msg, secs = out.stdout.strip().splitlines()[-2:]
    assert "could not reach the Hugging Face Hub for dataset 'someone/does-not-exist' (offline?)" in msg
    assert "pass a local file path instead" in msg
    assert float(secs) < 10 and time.time() - t < 30


def test_unreachable_hub_without_offline_flag_fails_fast(monkeypatch):
    # No HF_HUB_OFFLINE, but the endpoint is unreachable: we must not sit through datasets' retries.
    import datasets.config
    from huggingface_hub import constants
    import labkit.data as data
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout_s=3.0: False)
    before = constants.HF_HUB_OFFLINE
    t = time.time()
    with pytest.raises(DataError, match=r"could not reach the Hugging Face Hub .*\(offline\?\)"):
        load_instructions("someone/does-not-exist")
    assert time.time() - t < 10
    assert datasets.config.HF_HUB_OFFLINE is False and constants.HF_HUB_OFFLINE is before  # flags restored


def test_hub_dataset_rows_are_parsed(monkeypatch):
    import datasets
    ds = datasets.Dataset.from_list([{"instruction": "Say hi.", "input": "", "output": "Hi!"},
                                     {"instruction": "Add 2 and 2.", "input": "", "output": ""}])
    monkeypatch.setattr(datasets, "load_dataset", lambda name, subset=None, split=None: ds)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # skip the network probe
    recs, report = load_instructions("tatsu-lab/alpaca")
    assert recs == [{"prompt": "Say hi.", "response": "Hi!", "source": "alpaca:tatsu-lab/alpaca"}]
    assert report.skipped == [(1, "field 'output' is empty")] and report.place == "row"
    with pytest.raises(DataError, match="has no 'text' column \\(columns: instruction, input, output\\)"):
        load_texts("tatsu-lab/alpaca")
    assert load_texts("tatsu-lab/alpaca", text_field="instruction", max_docs=1) == ["Say hi."]


# ---------------------------------------------------------------------------------------------- instructions

def test_alpaca_json_array_with_index_reports(tmp_path):
    p = tmp_path / "alpaca.json"
    p.write_text(json.dumps([
        {"instruction": "Translate to French.", "input": "Good night.", "output": "Bonne nuit."},
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Missing output.", "input": ""},
        {"instruction": "Wrong type.", "input": "", "output": 42},
        {"instruction": "Empty answer.", "input": None, "output": "   "},
        ["not", "an", "object"],
    ], indent=1))
    recs, report = load_instructions(p)
    assert recs == [
        {"prompt": "Translate to French.\n\nGood night.", "response": "Bonne nuit.", "source": "alpaca:alpaca.json"},
        {"prompt": "Name a colour.", "response": "Blue.", "source": "alpaca:alpaca.json"},
    ]
    assert isinstance(report, LoadReport)
    assert (report.n_read, report.n_loaded, report.n_skipped, report.place) == (6, 2, 4, "record")
    assert [n for n, _ in report.skipped] == [2, 3, 4, 5]
    assert "missing field 'output' (fields present: instruction, input)" in report.skipped[0][1]
    assert "field 'output' is int" in report.skipped[1][1]
    assert "field 'output' is empty" in report.skipped[2][1]
    assert "expected a JSON object, got list" in report.skipped[3][1]
    assert report.formats == {"alpaca": 2} and "record [2]" in str(report)
    with pytest.raises(DataError) as e:
        load_instructions(p, on_error="fail")
    msg = one_line(e)
    assert "alpaca.json record [2]: missing field 'output'" in msg


def test_dolly_jsonl_line_numbers_skip_and_fail(tmp_path):
    p = jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "When was the Battle of Hastings?", "context": "", "response": "1066.", "category": "open_qa"},
        {"instruction": "How many moons?", "context": "Mars has two moons.", "response": "Two.", "category": "closed_qa"},
        "",                                                    # line 3: blank lines are not records
        '{"instruction": "broken json", "response": ',         # line 4
        {"instruction": "No answer", "context": ""},           # line 5
        {"instruction": "ok again", "context": None, "response": "Yes."},
    ])
    recs, report = load_instructions(p)
    assert [r["prompt"] for r in recs] == ["When was the Battle of Hastings?",
                                           "How many moons?\n\nMars has two moons.", "ok again"]
    assert recs[1] == {"prompt": "How many moons?\n\nMars has two moons.", "response": "Two.",
                       "source": "dolly:dolly.jsonl"}
    assert [n for n, _ in report.skipped] == [4, 5] and report.n_read == 5
    assert report.skipped[0][1].startswith("invalid JSON")
    assert "missing field 'response'" in report.skipped[1][1]
    with pytest.raises(DataError) as e:
        load_instructions(p, on_error="fail")
    assert "dolly.jsonl line 4: invalid JSON" in one_line(e)
    with pytest.raises(ValueError, match="on_error"):
        load_instructions(p, on_error="ignore")


def test_flan_chat_sharegpt_and_prompt_completion(tmp_path):
    jsonl(tmp_path / "flan.jsonl", [{"inputs": "Is the sky green? Options: yes, no", "targets": "no"},
                                    {"inputs": "What is 2+3?", "targets": 5}])
    recs, report = load_instructions(tmp_path / "flan.jsonl")
    assert recs == [{"prompt": "Is the sky green? Options: yes, no", "response": "no", "source": "flan:flan.jsonl"}]
    assert report.skipped == [(2, "field 'targets' is int, expected a string")]

    single = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello!"}]}
    multi = {"messages": [{"role": "user", "content": "Capital of France?"},
                          {"role": "assistant", "content": "Paris."},
                          {"role": "user", "content": "And of Italy?"},
                          {"role": "assistant", "content": "Rome."},
                          {"role": "user", "content": "Thanks"}]}  # trailing user turn: ignored
    just_user = {"messages": [{"role": "user", "content": "Hello?"}]}
    bad_role = {"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]}
    lone = {"messages": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Pear."}]}
    jsonl(tmp_path / "chat.jsonl", [single, multi, just_user, bad_role, lone])
    recs, report = load_instructions(tmp_path / "chat.jsonl")
    assert recs[0] == {"prompt": "System: Be brief.\n\nUser: Hi", "response": "Hello!", "source": "chat:chat.jsonl",
                       "messages": single["messages"]}
    assert recs[1]["prompt"] == "User: Capital of France?\n\nAssistant: Paris.\n\nUser: And of Italy?"
    assert recs[1]["response"] == "Rome." and recs[1]["messages"] == multi["messages"][:4]
    assert recs[2] == {"prompt": "Name a fruit.", "response": "Pear.", "source": "chat:chat.jsonl"}
    assert [n for n, _ in report.skipped] == [3, 4]
    assert "no assistant turn" in report.skipped[0][1] and "role 'narrator'" in report.skipped[1][1]

    jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "2+2?"},
                                                           {"from": "gpt", "value": "4"}]}])
    assert load_instructions(tmp_path / "sharegpt.jsonl")[0] == [
        {"prompt": "2+2?", "response": "4", "source": "sharegpt:sharegpt.jsonl"}]

    jsonl(tmp_path / "pc.jsonl", [{"prompt": "The capital of Spain is", "completion": " Madrid."},
                                  {"prompt": [{"role": "user", "content": "Hi"}],
                                   "completion": [{"role": "assistant", "content": "Hey."}]}])
    recs, _ = load_instructions(tmp_path / "pc.jsonl")
    assert [(r["prompt"], r["response"]) for r in recs] == [("The capital of Spain is", " Madrid."), ("Hi", "Hey.")]


def test_instruction_file_level_errors(tmp_path):
    jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as e:
        load_instructions(tmp_path / "odd.jsonl")
    msg = one_line(e)
    assert "can't tell the instruction format from fields question, answer" in msg and "instruction/output" in msg
    jsonl(tmp_path / "allbad.jsonl", [{"instruction": "a", "output": ""}, {"instruction": "b", "output": ""}])
    with pytest.raises(DataError, match=r"no usable instruction records — all 2 were malformed \(first problem: line 1"):
        load_instructions(tmp_path / "allbad.jsonl")
    (tmp_path / "t.txt").write_text("just text")
    with pytest.raises(DataError, match="plain text has no instruction records"):
        load_instructions(tmp_path / "t.txt")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="contains no records"):
        load_instructions(tmp_path / "empty.json")


def test_instruction_folder_mixes_formats_and_names_files(tmp_path):
    jsonl(tmp_path / "a_dolly.jsonl", [{"instruction": "i", "context": "", "response": "r"}, {"instruction": "x"}])
    (tmp_path / "b_alpaca.json").write_text(json.dumps([{"instruction": "i2", "input": "", "output": "o2"}]))
    recs, report = load_instructions(tmp_path)
    assert [r["source"] for r in recs] == ["dolly:a_dolly.jsonl", "alpaca:b_alpaca.json"]
    assert report.formats == {"dolly": 1, "alpaca": 1}
    assert report.skipped == [(2, "a_dolly.jsonl: missing field 'response' (fields present: instruction)")]
    assert len(load_instructions(tmp_path, max_records=1)[0]) == 1


# ---------------------------------------------------------------------------------------------- preferences

def test_hh_rlhf_gz_splits_common_prefix(tmp_path):
    H, A = "\n\nHuman: ", "\n\nAssistant: "
    multi = H + "Hi" + A + "Hello, how can I help?" + H + "Name a red fruit."
    p = jsonl(tmp_path / "hh.jsonl.gz", [
        {"chosen": H + "What is 2+2?" + A + "It is 4.", "rejected": H + "What is 2+2?" + A + "It is 5."},
        {"chosen": multi + A + "A strawberry.", "rejected": multi + A + "A banana."},
        {"chosen": H + "Same" + A + "x", "rejected": H + "Same" + A + "x"},        # line 3: tie
        {"chosen": H + "Question one" + A + "a", "rejected": H + "Other question" + A + "b"},  # line 4
        {"chosen": H + "q" + A + "yes"},                                            # line 5
    ])
    recs, report = load_preferences(p)
    assert recs[0] == {"prompt": H + "What is 2+2?\n\nAssistant:", "chosen": " It is 4.", "rejected": " It is 5."}
    assert recs[1]["prompt"] == multi + "\n\nAssistant:"
    assert (recs[1]["chosen"], recs[1]["rejected"]) == (" A strawberry.", " A banana.")
    assert all(r["prompt"] + r["chosen"] == c for r, c in zip(recs, [H + "What is 2+2?" + A + "It is 4.",
                                                                    multi + A + "A strawberry."]))
    assert [n for n, _ in report.skipped] == [3, 4, 5] and report.formats == {"hh_rlhf": 2}
    assert "identical" in report.skipped[0][1] and "share no prompt" in report.skipped[1][1]
    assert "missing field 'rejected'" in report.skipped[2][1]
    with pytest.raises(DataError) as e:
        load_preferences(p, on_error="fail")
    assert "hh.jsonl.gz line 3: chosen and rejected responses are identical" in one_line(e)


def test_prompt_chosen_rejected_and_chat_pairs(tmp_path):
    jsonl(tmp_path / "pcr.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
                                   {"prompt": "Hi", "chosen": "Hello!", "rejected": ""},
                                   {"prompt": "Hi", "chosen": None, "rejected": "Yo"}])
    recs, report = load_preferences(tmp_path / "pcr.jsonl")
    assert recs == [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    assert report.skipped == [(2, "field 'rejected' is empty"), (3, "field 'chosen' is NoneType, expected a string")]

    u = {"role": "user", "content": "Write a greeting."}
    jsonl(tmp_path / "uf.jsonl", [
        {"prompt": "Write a greeting.", "chosen": [u, {"role": "assistant", "content": "Hello there!"}],
         "rejected": [u, {"role": "assistant", "content": "no"}]},
        {"prompt": [u], "chosen": [{"role": "assistant", "content": "Hi!"}],        # explicit-prompt form
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"chosen": [u, {"role": "assistant", "content": "a"}],                        # line 3: prompts differ
         "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]},
    ])
    recs, report = load_preferences(tmp_path / "uf.jsonl")
    assert recs == [{"prompt": "Write a greeting.", "chosen": "Hello there!", "rejected": "no"},
                    {"prompt": "Write a greeting.", "chosen": "Hi!", "rejected": "Go away."}]
    assert report.formats == {"chat_pairs": 2} and report.skipped[0][0] == 3 and "differ" in report.skipped[0][1]
    jsonl(tmp_path / "sft.jsonl", [{"instruction": "i", "output": "o"}])
    with pytest.raises(DataError, match="can't tell the preference format from fields instruction, output"):
        load_preferences(tmp_path / "sft.jsonl")


# ---------------------------------------------------------------------------------------------- shipped samples

def test_shipped_samples_load_cleanly():
    size = sum(f.stat().st_size for f in SAMPLES.iterdir())
    assert size < 100_000
    texts = load_texts(SAMPLES / "english_sample.txt")
    assert len(texts) > 20 and texts[1].startswith("It is a truth universally acknowledged")
    assert sum(map(len, texts)) > 5000
    for loader, name, fmt in [(load_instructions, "alpaca_sample.json", "alpaca"),
                              (load_instructions, "dolly_sample.jsonl", "dolly"),
                              (load_preferences, "hh_sample.jsonl.gz", "hh_rlhf"),
                              (load_preferences, "prefs_sample.jsonl", "prompt_chosen_rejected")]:
        recs, report = loader(SAMPLES / name, on_error="fail")
        assert len(recs) == 20 and report.formats == {fmt: 20}, (name, report)
    from labkit.data import load_prompts
    chats, report = load_instructions(SAMPLES / "chat_sample.jsonl", on_error="fail")
    assert len(chats) == 20 and report.formats == {"chat": 20} and sum("messages" in c for c in chats) >= 3
    prompts, report = load_prompts(SAMPLES / "prompts_sample.jsonl")
    assert len(prompts) == 40 and report.formats == {"prompt": 40}
    multi, report = load_preferences(SAMPLES / "hh_multiturn_sample.jsonl.gz", on_error="fail")
    assert len(multi) == 12 and report.formats == {"hh_rlhf": 12}
    assert all(p["prompt"].count("\n\nHuman:") == 2 for p in multi)  # multi-turn: what stage 4 cuts from the left


# ---------------------------------------------------------------------------------------------- prompts

def test_prompts_in_every_format_people_bring(tmp_path):
    from labkit.data import load_prompts
    bare = jsonl(tmp_path / "bare.jsonl", [{"prompt": "Say hi."}, '"Name a colour."',
                                           {"prompt": "Add 2 and 2.", "answer": "4", "family": "arithmetic", "id": "t7"}])
    tasks, report = load_prompts(bare)
    assert [t["prompt"] for t in tasks] == ["Say hi.", "Name a colour.", "Add 2 and 2."]
    assert [t["family"] for t in tasks] == ["custom", "custom", "arithmetic"] and "answer" not in tasks[0]
    assert tasks[2]["answer"] == "4" and [t["id"] for t in tasks] == ["p0", "p1", "t7"]  # a world task keeps its fields
    assert report.formats == {"prompt": 3} and report.n_loaded == 3
    txt = tmp_path / "prompts.txt"
    txt.write_text("What is tea?\n\n  How do I boil an egg?  \n")
    assert [t["prompt"] for t in load_prompts(txt)[0]] == ["What is tea?", "How do I boil an egg?"]
    # Instruction files give their prompt part, never the answer.
    alpaca, _ = load_prompts(SAMPLES / "alpaca_sample.json")
    dolly, _ = load_prompts(SAMPLES / "dolly_sample.jsonl")
    with_input = next(r for r in json.loads((SAMPLES / "alpaca_sample.json").read_text()) if r["input"])
    assert len(alpaca) == 20 and len(dolly) == 20
    assert any(t["prompt"] == with_input["instruction"] + "\n\n" + with_input["input"] for t in alpaca)
    assert not any(t["prompt"] == r["output"] for t in alpaca for r in json.loads((SAMPLES / "alpaca_sample.json").read_text()))
    chat = jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "Hi there"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "Tell me a joke"}, {"role": "assistant", "content": "No."}]}])
    tasks, report = load_prompts(chat)
    assert [t["prompt"] for t in tasks] == ["Hi there", "User: Hi\n\nAssistant: Hello!\n\nUser: Tell me a joke"]
    assert report.formats == {"chat": 2}
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in (bare, txt, chat):
        f.rename(folder / f.name)
    assert len(load_prompts(folder)[0]) == 7 and len(load_prompts(folder, max_records=4)[0]) == 4


def test_prompt_errors_are_one_line_naming_file_and_line(tmp_path):
    from labkit.data import load_prompts
    bad = jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, '{"prompt": ', {"prompt": "fine"}])
    with pytest.raises(DataError) as e:
        load_prompts(bad)
    assert one_line(e).startswith(f"{bad} line 2: invalid JSON")
    jsonl(bad, [{"prompt": "ok"}, {"prompt": ["not", "messages"]}])
    with pytest.raises(DataError, match=r"p.jsonl line 2: prompt\[0\] is str, expected an object") as e:
        load_prompts(bad)
    one_line(e)
    jsonl(bad, [{"prompt": "ok"}, {"text": "no prompt here"}])
    with pytest.raises(DataError, match=r"p.jsonl line 2: missing field 'prompt' \(fields present: text\)"):
        load_prompts(bad)
    assert [t["prompt"] for t in load_prompts(bad, on_error="skip")[0]] == ["ok"]
    jsonl(bad, [{"messages": [{"role": "assistant", "content": "I speak first"}]}])
    with pytest.raises(DataError, match="line 1: 'messages' has no user turn to answer"):
        load_prompts(bad)
    jsonl(bad, [{"text": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match=r"can't tell the prompt format from fields text — expected one of: messages"):
        load_prompts(bad)
    with pytest.raises(DataError, match="file not found"):
        load_prompts(tmp_path / "nope.jsonl")
