"""Load the data people bring into the record shapes the lab's stages use.

Four loaders, one per kind of data, each accepting a local file, a folder of files, or a
Hugging Face Hub dataset name:

    load_texts(source)        -> list[str]                         raw text for pretraining (01)
    load_instructions(source) -> (records, LoadReport)             {"prompt", "response", "source"} for SFT (02)
    load_prompts(source)      -> (tasks, LoadReport)               {"id", "prompt", "family"} for stages 03, 05, 06
    load_preferences(source)  -> (records, LoadReport)             {"prompt", "chosen", "rejected"} for the reward model (04)

Local files: `.txt` (documents split on blank lines), `.jsonl` / `.ndjson`, `.json` (a list of
objects, or JSON Lines under a .json name), `.parquet`, and `.gz` of the text formats.
Instruction formats are detected per file: Alpaca (instruction/input/output), Dolly
(instruction/context/response), FLAN (inputs/targets), chat `messages` (or ShareGPT
`conversations`), prompt/completion and prompt/response. Prompts: bare `{"prompt"}` lines (or
world task dicts), JSON strings or `.txt` lines, and any instruction format (its prompt part).
Preference formats: hh-rlhf whole transcripts, prompt/chosen/rejected, and chat-message pairs.

Bad input raises `DataError` (a ValueError) with a one-line message naming the file, the place
and the fix. Malformed records in instruction/preference data are either skipped and listed in
the `LoadReport` (on_error="skip") or raise at the first one (on_error="fail").

    >>> texts = load_texts("data/samples/english_sample.txt")
    >>> sft, report = load_instructions("data/samples/alpaca_sample.json"); print(report)
"""
from __future__ import annotations

import codecs
import contextlib
import gzip
import itertools
import json
import os
import re
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlparse

__all__ = ["DataError", "LoadReport", "load_texts", "load_instructions", "load_prompts", "load_preferences"]

_KINDS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
_SUPPORTED = ".txt, .jsonl, .json, .parquet (or .txt.gz / .jsonl.gz / .json.gz)"


class DataError(ValueError):
    """Bad input data. The message is one line: which file, where, what is wrong, how to fix it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # guarantee one line


class _Bad(Exception):
    """A malformed record (internal): carries the reason, the caller adds file and line."""


@dataclass
class LoadReport:
    """What a loader did: how many records it read, kept and skipped, and why."""

    source: str                                   # what was loaded (path or hub name)
    formats: dict[str, int] = field(default_factory=dict)  # detected format -> records kept
    n_read: int = 0                               # records seen (blank lines are not records)
    n_loaded: int = 0                             # records returned
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (number, reason); numbers as `place` says
    place: str = ""                               # "line" (1-based), "record" (0-based JSON array index), "row" (0-based)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        fmt = ", ".join(f"{k}: {v}" for k, v in self.formats.items()) or "no format"
        s = f"{self.source}: loaded {self.n_loaded} of {self.n_read} records ({fmt})"
        if self.skipped:
            shown = "; ".join(f"{_where(self.place, n)}: {why}" for n, why in self.skipped[:3])
            s += f", skipped {self.n_skipped} ({shown}{'; ...' if self.n_skipped > 3 else ''})"
        return s


# ----------------------------------------------------------------------------------------------
# Reading files: one place that turns bytes into text or records, with one-line errors.

def _kind(path: Path) -> str | None:
    """'txt' | 'jsonl' | 'json' | 'parquet' (plus '.gz' for gzipped text), or None if unsupported."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    kind = _KINDS.get(suffixes[-1]) if suffixes else None
    if kind is None or (gz and kind == "parquet"):
        return None
    return kind + (".gz" if gz else "")


def _read_text(path: Path, allow_empty: bool = False) -> str:
    """Read a UTF-8 text file (gunzipping `.gz`), refusing binary and non-UTF-8 content."""
    if not path.exists():
        raise DataError(f"{path}: file not found — check the path (relative paths start at {os.getcwd()})")
    raw = path.read_bytes()
    where = "offset"
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a valid gzip file ({e}) — re-compress it with gzip or drop the .gz suffix") from None
        where = "offset (after gunzip)"
    start = 3 if raw.startswith(codecs.BOM_UTF8) else 0  # a BOM is harmless; keep offsets true to the file
    if not raw[start:].strip():
        if allow_empty:
            return ""
        raise DataError(f"{path}: file is empty (or only whitespace) — point at a file that contains data")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # e.g. saved by Windows Notepad / PowerShell
        raise DataError(f"{path}: is UTF-16 text (byte-order mark at offset 0) — re-save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: looks like a binary file (NUL byte at {where} {nul}) — expected UTF-8 text "
                        f"or one of {_SUPPORTED}")
    try:
        return raw[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        off = start + e.start
        raise DataError(f"{path}: not valid UTF-8 (byte 0x{raw[off]:02x} at {where} {off}) — re-save the file as "
                        f"UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`") from None


def _json_error(e: json.JSONDecodeError) -> str:
    return f"invalid JSON ({e.msg} at column {e.colno})"


def _iter_records(path: Path, kind: str) -> Iterator[tuple[str, int, Any]]:
    """Yield (place, number, object): ("line", 1-based line), ("record", 0-based index into a JSON
    array) or ("row", 0-based parquet row). A line that is not JSON yields a _Bad object."""
    if kind == "parquet":
        if not path.exists():
            _read_text(path)  # raises the standard "file not found"
        import pyarrow.parquet as pq
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError on non-parquet bytes
            raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]}) — "
                            f"check the file or convert it to JSONL") from None
        yield from (("row", i, r) for i, r in enumerate(rows))
        return
    text = _read_text(path)
    if kind.startswith("json") and not kind.startswith("jsonl"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # "Extra data" = several JSON values: treat as JSON Lines below
                raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}) — "
                                f"fix the file, or use one JSON object per line (.jsonl)") from None
        else:
            if isinstance(obj, dict):  # {"data": [...]} wrappers, else one record
                lists = [v for k, v in obj.items() if k in ("data", "train", "examples", "rows", "records")
                         and isinstance(v, list)]
                obj = lists[0] if lists else [obj]
            if not isinstance(obj, list):
                raise DataError(f"{path}: top-level JSON is a {type(obj).__name__} — expected a list of objects")
            yield from (("record", i, r) for i, r in enumerate(obj))
            return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield "line", n, json.loads(line)
        except json.JSONDecodeError as e:
            yield "line", n, _Bad(_json_error(e))


def _where(place: str, n: int) -> str:
    return f"record [{n}]" if place == "record" else f"{place} {n}"


def _files(path: Path) -> list[tuple[Path, str]]:
    """The supported files under `path` (itself if a file), sorted, with their kinds."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p)
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise DataError(f"{path}: folder has no data files — expected {_SUPPORTED}")
        return [(p, _kind(p)) for p in found]
    kind = _kind(path)
    if kind is None:
        if not path.exists():
            _read_text(path)
        raise DataError(f"{path}: unsupported file type — expected {_SUPPORTED}")
    return [(path, kind)]


# ----------------------------------------------------------------------------------------------
# Hub datasets. Offline, `datasets` retries for ~25 s before giving up, so we probe the endpoint
# once (a TCP connect, 3 s) and, if it is unreachable, load in offline mode: a cached copy still
# loads, anything else fails at once. HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set by the user are
# respected as they are (datasets.config reads them at import).

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _is_hub_name(source: str | os.PathLike) -> bool:
    s = str(source)
    return (isinstance(source, str) and not os.path.exists(s) and bool(_HUB_NAME.match(s))
            and _kind(Path(s)) is None and not s.lower().endswith(".gz"))


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct connect proves nothing; let `datasets` try
    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode():
    """Temporarily switch huggingface_hub and datasets to offline mode (both read these flags per call)."""
    import datasets.config
    from huggingface_hub import constants
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _load_hub(name: str, split: str, subset: str | None):
    import datasets
    offline_msg = (f"could not reach the Hugging Face Hub for dataset '{name}' (offline?) — pass a local file "
                   f"path instead (no local file or folder named '{name}' exists either)")
    forced = False
    try:
        forced = not datasets.config.HF_HUB_OFFLINE and not _hub_reachable()
        with _offline_mode() if forced else contextlib.nullcontext():
            return datasets.load_dataset(name, subset, split=split)
    except ConnectionError:  # includes huggingface_hub's OfflineModeIsEnabled
        raise DataError(offline_msg) from None
    except FileNotFoundError as e:  # DatasetNotFoundError, or not in the cache when offline
        if datasets.config.HF_HUB_OFFLINE or forced:
            raise DataError(offline_msg) from None
        raise DataError(f"dataset '{name}' not found on the Hugging Face Hub ({str(e).splitlines()[0]}) — "
                        f"check the name, or pass a local file path") from None
    except Exception as e:  # bad split or subset, gated dataset, ...: keep the library's reason, one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"could not load hub dataset '{name}' (split={split!r}, subset={subset!r}): {first}") from None


def _sources(source, split: str, subset: str | None) -> Iterator[tuple[str, str, Any]]:
    """Yield (display name, kind, Path or hub Dataset) per file — or once for a hub dataset."""
    if _is_hub_name(source):
        yield source, "hub", _load_hub(source, split, subset)
        return
    for path, kind in _files(Path(source)):
        yield str(path), kind, path


def _records(kind: str, obj: Any) -> Iterable[tuple[str, int, Any]]:
    return (("row", i, r) for i, r in enumerate(obj)) if kind == "hub" else _iter_records(obj, kind)


# ----------------------------------------------------------------------------------------------
# 1. Raw text for pretraining

def load_texts(source: str | os.PathLike, text_field: str = "text", max_docs: int | None = None,
               split: str = "train", subset: str | None = None) -> list[str]:
    """Documents (non-empty strings) from a text/JSON/parquet file, a folder of them, or a hub dataset.

    `.txt` files are split into documents on blank lines (so a book gives one document per
    paragraph); JSON/parquet/hub records give their `text_field`. Empty documents are dropped;
    `max_docs` stops early. `split`/`subset` only matter for hub datasets.
    """
    docs: list[str] = []
    for name, kind, obj in _sources(source, split, subset):
        if kind.startswith("txt"):
            text = _read_text(obj).replace("\r\n", "\n")
            docs += [d.strip() for d in re.split(r"\n[ \t]*\n", text) if d.strip()]
        else:
            if kind == "hub" and text_field not in obj.column_names:
                raise DataError(f"hub dataset '{name}' has no '{text_field}' column (columns: "
                                f"{', '.join(obj.column_names)}) — pass text_field=<one of them>")
            for place, n, rec in _records(kind, obj):
                text = _text_of(rec, text_field, f"{name} {_where(place, n)}")
                if text.strip():
                    docs.append(text)
                if max_docs is not None and len(docs) >= max_docs:
                    break
        if max_docs is not None and len(docs) >= max_docs:
            break
    if not docs:
        raise DataError(f"{source}: no text found — expected non-empty documents "
                        f"(blank-line separated .txt, or a non-empty '{text_field}' field)")
    return docs[:max_docs] if max_docs is not None else docs


def _text_of(rec: Any, text_field: str, where: str) -> str:
    if isinstance(rec, _Bad):
        raise DataError(f"{where}: {rec} — fix or remove this line")
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object with a '{text_field}' field, got {type(rec).__name__}")
    if text_field not in rec:
        strings = [k for k, v in rec.items() if isinstance(v, str)]
        hint = f"; pass text_field='{strings[0]}'" if len(strings) == 1 else ""
        raise DataError(f"{where}: no '{text_field}' field (fields present: {', '.join(map(str, rec)) or 'none'}){hint}")
    value = rec[text_field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{text_field}' is a {type(value).__name__}, expected a string")
    return value


# ----------------------------------------------------------------------------------------------
# Field checks shared by the instruction and preference parsers: each raises _Bad(reason).

def _fields(rec: dict) -> str:
    return ", ".join(map(str, rec)) or "none"


def _str(rec: dict, key: str, optional: bool = False) -> str:
    if key not in rec or (optional and rec[key] is None):
        if optional:
            return ""
        raise _Bad(f"missing field '{key}' (fields present: {_fields(rec)})")
    value = rec[key]
    if not isinstance(value, str):
        raise _Bad(f"field '{key}' is {type(value).__name__}, expected a string")
    if not optional and not value.strip():
        raise _Bad(f"field '{key}' is empty")
    return value


_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "bot": "assistant",
          "model": "assistant", "system": "system"}


def _turns(value: Any, key: str) -> list[dict[str, str]]:
    """A chat as [{role, content}], accepting {role, content} and ShareGPT {from, value} turns."""
    if not isinstance(value, list) or not value:
        raise _Bad(f"field '{key}' must be a non-empty list of messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise _Bad(f"{key}[{i}] is {type(m).__name__}, expected an object with role and content")
        role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
        if str(role).lower() not in _ROLES:
            raise _Bad(f"{key}[{i}] has role {role!r}, expected user, assistant or system")
        if not isinstance(content, str):
            raise _Bad(f"{key}[{i}] content is {type(content).__name__}, expected a string")
        out.append({"role": _ROLES[str(role).lower()], "content": content})
    return out


def _render(turns: list[dict[str, str]]) -> str:
    """Prompt text for earlier turns: a lone user turn as itself, else 'Role: text' blocks."""
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)


def _split_last_answer(turns: list[dict[str, str]], key: str) -> tuple[list[dict[str, str]], str]:
    """(turns before the last assistant turn, that turn's text); later turns are dropped."""
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=-1)
    if last < 0:
        raise _Bad(f"'{key}' has no assistant turn to learn from")
    if not turns[last]["content"].strip():
        raise _Bad(f"the last assistant turn in '{key}' is empty")
    return turns[:last], turns[last]["content"]


def _check(on_error: str) -> None:
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")


def _detect(records: list[tuple[str, int, Any]], formats: dict[str, tuple[str, ...]], name: str, what: str) -> str:
    """The first format whose required fields all appear in one of the file's first records."""
    first = None
    for _, _, rec in records:
        if isinstance(rec, dict):
            first = rec if first is None else first
            for fmt, keys in formats.items():
                if all(k in rec for k in keys):
                    return fmt
    expected = "; ".join(f"{'/'.join(k)} ({f})" for f, k in formats.items())
    got = f"fields {_fields(first)}" if first is not None else "no JSON objects"
    raise DataError(f"{name}: can't tell the {what} format from {got} — expected one of: {expected}")


def _as_records(stream, key: str) -> Iterator[tuple[str, int, Any]]:
    """A record that is a bare string stands for ``{key: string}``."""
    return ((place, n, {key: rec} if isinstance(rec, str) else rec) for place, n, rec in stream)


def _load(source, on_error: str, split: str, subset: str | None, max_records: int | None,
          formats: dict[str, tuple[str, ...]], parse, what: str,
          strings_as: str | None = None) -> tuple[list[dict], LoadReport]:
    """Shared driver: per file, detect the format, parse each record, skip or fail on malformed ones.
    ``strings_as``: read a `.txt` line or a JSON string as the record ``{strings_as: text}``."""
    _check(on_error)
    report, out = LoadReport(source=str(source)), []
    files = list(_sources(source, split, subset))
    for name, kind, obj in files:
        if kind.startswith("txt") and strings_as is None:
            raise DataError(f"{name}: plain text has no {what} records — use JSON/JSONL/parquet records "
                            f"(load_texts reads raw text)")
        if kind.startswith("txt"):
            lines = enumerate(_read_text(obj).splitlines(), start=1)
            stream = iter([("line", n, {strings_as: line.strip()}) for n, line in lines if line.strip()])
        else:
            stream = iter(_records(kind, obj) if strings_as is None else _as_records(_records(kind, obj), strings_as))
        head = list(itertools.islice(stream, 100))  # enough to detect the format; the rest streams
        if not head:
            raise DataError(f"{name}: contains no records")
        fmt = _detect(head, formats, name, what)
        records = itertools.chain(head, stream)
        label = name if kind == "hub" else Path(name).name
        report.place = report.place or head[0][0]
        for place, n, rec in records:
            report.n_read += 1
            try:
                if isinstance(rec, _Bad):
                    raise rec
                if not isinstance(rec, dict):
                    raise _Bad(f"expected a JSON object, got {type(rec).__name__}")
                item, sub = parse(fmt, rec, f"{fmt}:{label}")
            except _Bad as e:
                if on_error == "fail":
                    raise DataError(f"{name} {_where(place, n)}: {e} — fix or remove this record, "
                                    f"or pass on_error='skip'") from None
                report.skipped.append((n, f"{Path(name).name}: {e}" if len(files) > 1 else str(e)))
                continue
            out.append(item)
            report.formats[sub] = report.formats.get(sub, 0) + 1
            if max_records is not None and len(out) >= max_records:
                break
        if max_records is not None and len(out) >= max_records:
            break
    report.n_loaded = len(out)
    if not out:
        first = f" (first problem: {_where(report.place, report.skipped[0][0])}: {report.skipped[0][1]})" \
            if report.skipped else ""
        raise DataError(f"{source}: no usable {what} records — all {report.n_read} were malformed{first}")
    return out, report


# ----------------------------------------------------------------------------------------------
# 2. Instruction data for SFT: {"prompt", "response", "source"} (+ "messages" for multi-turn chats)

_INSTRUCTION_FORMATS = {  # detection order matters: the first whose fields all appear wins
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "prompt_response": ("prompt", "response"),
    "alpaca": ("instruction", "output"),
    "dolly": ("instruction", "response"),
    "flan": ("inputs", "targets"),
}


def _join(instruction: str, extra: str) -> str:
    # The input/context goes after the instruction, separated by a blank line (as Alpaca's and
    # Dolly's own prompt templates place it after the instruction).
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def _parse_instruction(fmt: str, rec: dict, source: str) -> tuple[dict, str]:
    if fmt in ("chat", "sharegpt"):
        key = "messages" if fmt == "chat" else "conversations"
        if key not in rec:
            raise _Bad(f"missing field '{key}' (fields present: {_fields(rec)})")
        earlier, answer = _split_last_answer(_turns(rec[key], key), key)
        if not any(t["role"] == "user" and t["content"].strip() for t in earlier):
            raise _Bad(f"'{key}' has no user turn before the last assistant turn")
        item = {"prompt": _render(earlier), "response": answer, "source": source}
        if len(earlier) > 1:  # multi-turn: keep the structure for chat-template training
            item["messages"] = earlier + [{"role": "assistant", "content": answer}]
        return item, fmt
    if fmt == "prompt_completion" and isinstance(rec.get("prompt"), list):  # TRL conversational form
        earlier = _turns(rec["prompt"], "prompt")
        _, answer = _split_last_answer(_turns(rec.get("completion"), "completion"), "completion")
        item = {"prompt": _render(earlier), "response": answer, "source": source}
        if len(earlier) > 1:
            item["messages"] = earlier + [{"role": "assistant", "content": answer}]
        return item, fmt
    if fmt in ("prompt_completion", "prompt_response"):
        prompt, response = _str(rec, "prompt"), _str(rec, "completion" if fmt == "prompt_completion" else "response")
    elif fmt == "alpaca":
        prompt, response = _join(_str(rec, "instruction"), _str(rec, "input", optional=True)), _str(rec, "output")
    elif fmt == "dolly":
        prompt, response = _join(_str(rec, "instruction"), _str(rec, "context", optional=True)), _str(rec, "response")
    else:  # flan
        prompt, response = _str(rec, "inputs"), _str(rec, "targets")
    return {"prompt": prompt, "response": response, "source": source}, fmt


def load_instructions(source: str | os.PathLike, on_error: str = "skip", split: str = "train",
                      subset: str | None = None, max_records: int | None = None) -> tuple[list[dict], LoadReport]:
    """SFT records {"prompt", "response", "source"} and a LoadReport, from any supported instruction format.

    The format is detected per file. `source` is "<format>:<file name>" (or "<format>:<hub name>").
    Chats keep the last assistant turn as the response and render the earlier turns as the prompt;
    multi-turn chats also keep `messages` (earlier turns + that answer). Malformed records are
    skipped and listed in the report (on_error="skip") or raise DataError (on_error="fail").
    """
    return _load(source, on_error, split, subset, max_records, _INSTRUCTION_FORMATS,
                 _parse_instruction, "instruction")


# ----------------------------------------------------------------------------------------------
# 3. Prompts for the stages that sample from a policy (preferences, PPO, compare): one reader for all three

_PROMPT_FORMATS = {  # detection order matters, as for instructions
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "prompt": ("prompt",),       # {"prompt": ...} lines, world task dicts, prompt/completion and prompt/response
    "alpaca": ("instruction",),  # Alpaca's input or Dolly's context follows the instruction
    "flan": ("inputs",),
}


def _parse_prompt(fmt: str, rec: dict, source: str) -> tuple[dict, str]:
    if fmt in ("chat", "sharegpt"):
        key = "messages" if fmt == "chat" else "conversations"
        turns = _turns(rec.get(key), key)
        if turns[-1]["role"] == "assistant":  # a conversation with its answer: the prompt is what came before
            turns = turns[:-1]
        if not any(t["role"] == "user" and t["content"].strip() for t in turns):
            raise _Bad(f"'{key}' has no user turn to answer")
        return {"prompt": _render(turns)}, fmt
    if fmt == "prompt":
        prompt = _render(_turns(rec["prompt"], "prompt")) if isinstance(rec.get("prompt"), list) else _str(rec, "prompt")
        # A world task's fields (answer, family...) come along: with an answer, the verifier can score it.
        return {**rec, "prompt": prompt}, fmt
    if fmt == "alpaca":
        extra = _str(rec, "input", optional=True) or _str(rec, "context", optional=True)
        return {"prompt": _join(_str(rec, "instruction"), extra)}, fmt
    return {"prompt": _str(rec, "inputs")}, fmt


def load_prompts(source: str | os.PathLike, on_error: str = "fail", split: str = "train",
                 subset: str | None = None, max_records: int | None = None) -> tuple[list[dict], LoadReport]:
    """Prompts as tasks ``{"id", "prompt", "family"}`` and a LoadReport: what stages 3, 5 and 6 sample on.

    Accepts bare ``{"prompt": ...}`` lines (a record's other fields are kept, so world task dicts keep
    their ``answer`` and ``family``), lines that are JSON strings, a `.txt` file with one prompt per
    line, and any instruction format (Alpaca, Dolly, FLAN, chat ``messages``, ShareGPT): its prompt
    part, without the answer. ``id`` is the record's or ``p<n>``; ``family`` the record's or "custom".
    A malformed record raises a one-line DataError naming the file and line (on_error="fail") or is
    skipped and listed in the report (on_error="skip").
    """
    records, report = _load(source, on_error, split, subset, max_records, _PROMPT_FORMATS, _parse_prompt,
                            "prompt", strings_as="prompt")
    return [{**r, "id": r.get("id", f"p{i}"), "family": r.get("family") or "custom"}
            for i, r in enumerate(records)], report


# ----------------------------------------------------------------------------------------------
# 4. Preference data for the reward model: {"prompt", "chosen", "rejected"}

_PREFERENCE_FORMATS = {"preference": ("chosen", "rejected")}  # sub-format decided per record below
_HH_ASSISTANT = "\n\nAssistant:"


def _split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """hh-rlhf transcripts -> (prompt, chosen, rejected). The prompt is the shared prefix up to and
    including its last "\\n\\nAssistant:"; responses keep their leading space, so prompt + chosen
    is the original transcript (Bai et al. 2022, Anthropic/hh-rlhf; TRL's hh-rlhf script does the same)."""
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(_HH_ASSISTANT, 0, shared)
    if cut < 0:
        raise _Bad("chosen and rejected share no prompt ending in '\\n\\nAssistant:' (expected hh-rlhf transcripts)")
    cut += len(_HH_ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _parse_preference(fmt: str, rec: dict, source: str) -> tuple[dict, str]:
    chosen, rejected = rec.get("chosen"), rec.get("rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):  # chat-message pairs (UltraFeedback)
        sub = "chat_pairs"
        c_earlier, c = _split_last_answer(_turns(chosen, "chosen"), "chosen")
        r_earlier, r = _split_last_answer(_turns(rejected, "rejected"), "rejected")
        if c_earlier != r_earlier:
            raise _Bad("chosen and rejected conversations differ before their last assistant turn")
        if c_earlier:
            prompt = _render(c_earlier)
        elif isinstance(rec.get("prompt"), list):
            prompt = _render(_turns(rec["prompt"], "prompt"))
        else:
            prompt = _str(rec, "prompt")
    elif "prompt" in rec:
        sub = "prompt_chosen_rejected"
        prompt, c, r = _str(rec, "prompt"), _str(rec, "chosen"), _str(rec, "rejected")
    else:
        sub = "hh_rlhf"
        prompt, c, r = _split_hh(_str(rec, "chosen"), _str(rec, "rejected"))
    if not c.strip() or not r.strip():
        raise _Bad(f"empty {'chosen' if not c.strip() else 'rejected'} response")
    if c == r:
        raise _Bad("chosen and rejected responses are identical (no preference to learn)")
    return {"prompt": prompt, "chosen": c, "rejected": r}, sub


def load_preferences(source: str | os.PathLike, on_error: str = "skip", split: str = "train",
                     subset: str | None = None, max_records: int | None = None) -> tuple[list[dict], LoadReport]:
    """Reward-model records {"prompt", "chosen", "rejected"} and a LoadReport.

    Accepts hh-rlhf transcripts (chosen/rejected strings), prompt/chosen/rejected strings, and
    chat-message pairs (chosen/rejected lists of messages; the prompt is their shared earlier turns,
    or the `prompt` field when the lists hold only the answers). Malformed or tied pairs are skipped
    and listed (on_error="skip") or raise DataError (on_error="fail").
    """
    return _load(source, on_error, split, subset, max_records, _PREFERENCE_FORMATS,
                 _parse_preference, "preference")
