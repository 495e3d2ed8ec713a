"""How much of real multi-turn preference data (hh-rlhf) the reward model keeps at each preset.

    python benchmarks/hh_rlhf_lengths.py --data harmless-base/test.jsonl.gz        # a local hh-rlhf file
    python benchmarks/hh_rlhf_lengths.py --data Anthropic/hh-rlhf --split test     # the hub (needs internet)

For each preset, stage 4 fits pairs into the model's positions (``reward.token_limit``: pretraining's
``block_size`` unless ``max_length`` is set) with ``reward_model.fit_pairs``: a pair that fits stays
whole; a longer one loses its prompt's earliest turns (then the start of its last turn), never a
response; a pair whose responses alone leave under ``MIN_PROMPT_TOKENS`` for the prompt is dropped.
The tokenizer is trained as stage 1 trains it at that preset (on the embedded world's text, the
preset's kind and vocabulary size), so the counts are those of a user who pretrains on the world and
brings hh-rlhf to stage 4. ``--block-sizes`` adds what other context lengths would keep at the cpu
preset's tokenizer (the setting to change when the default keeps too little). For the ``gpu`` preset the
planner's memory plan for stage 4 at the longest kept pair is recorded too (on paper: no GPU needed).

Writes ``benchmarks/results/hh_rlhf_lengths.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from labkit import planner, pretrain, reward
from labkit.data import load_preferences
from labkit.reward_model import MIN_PROMPT_TOKENS, fit_pairs, scoring_text
from labkit.tokenizer import train_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "hh_rlhf_lengths.json"


def counts_at(pairs: list[dict], tok, limit: int) -> dict:
    t0 = time.perf_counter()
    _, counts, longest = fit_pairs(pairs, tok, limit)
    kept = counts["whole"] + counts["truncated"]
    return {"max_length": limit, **counts, "kept": kept, "kept_percent": round(100 * kept / counts["pairs"], 1),
            "whole_percent": round(100 * counts["whole"] / counts["pairs"], 1), "longest_kept_tokens": longest,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="hh-rlhf: a local .jsonl.gz or a hub dataset name")
    ap.add_argument("--split", default="test", help="split, for a hub dataset")
    ap.add_argument("--presets", default="smoke,cpu,gpu")
    ap.add_argument("--block-sizes", default="256,512", help="other context lengths to count at the cpu tokenizer")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    pairs, report = load_preferences(args.data, split=args.split)
    source = Path(args.data)
    out = {"data": source.name if source.exists() else args.data, "load_report": str(report).replace(str(source), source.name),
           "sha256": hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None,
           "pairs": len(pairs), "policy": "responses never cut; the prompt loses its earliest turns first, then the "
                                         "start of its last turn; a pair whose responses leave under "
                                         f"{MIN_PROMPT_TOKENS} prompt tokens is dropped (reward_model.fit_pairs)",
           "presets": {}}
    tokenizers = {}
    for preset in args.presets.split(","):
        cfg = pretrain.config(preset)
        t0 = time.perf_counter()
        train, _ = pretrain.load_corpus(cfg)  # what stage 1 trains its tokenizer on at this preset
        tok = train_tokenizer(train, cfg.tokenizer, cfg.vocab_size)
        tokenizers[preset] = tok
        limit = reward.token_limit(reward.config(preset), SimpleNamespace(max_position_embeddings=cfg.block_size))
        row = {"tokenizer": f"{cfg.tokenizer} {cfg.vocab_size} on {len(train)} world documents",
               "tokenizer_seconds": round(time.perf_counter() - t0, 1), **counts_at(pairs, tok, limit)}
        sides = [len(ids) for ids in tok([scoring_text(tok, "", p[s]) for p in pairs for s in ("chosen", "rejected")],
                                         add_special_tokens=False)["input_ids"]]
        row["response_tokens_median"] = statistics.median(sides)
        row["tokens_per_word"] = round(sum(len(ids) for ids in tok([p["chosen"] for p in pairs], add_special_tokens=False)["input_ids"])
                                       / sum(len(p["chosen"].split()) for p in pairs), 2)
        if preset == "gpu":  # on paper: stage 4's memory plan for the gpu preset's model at the longest kept pair
            model = pretrain.model_shape(cfg, tok)  # on the meta device: nothing allocated
            rcfg = reward.config("gpu", bf16=True)  # the gpu preset's GPUs have bf16
            row["planner"] = {f"{gb} GiB": planner.config_plan(rcfg, model, "reward", "cuda", seq_len=row["longest_kept_tokens"],
                                                               budget=gb).summary() for gb in (24, 80)}
        out["presets"][preset] = row
        print(preset, {k: row[k] for k in ("max_length", "whole", "truncated", "dropped", "kept_percent")}, flush=True)
    if "cpu" in tokenizers:
        out["cpu_other_block_sizes"] = [counts_at(pairs, tokenizers["cpu"], int(b)) for b in args.block_sizes.split(",") if b]
        for row in out["cpu_other_block_sizes"]:
            print("cpu tokenizer, block_size", row["max_length"], "kept", row["kept_percent"], "%", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
