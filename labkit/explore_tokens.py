"""Two explorers at the level of tokens: the tokenizers of stage 1, and what RLHF changed.

    from labkit import explore_tokens
    explore_tokens.tokenizers(run="demo", runs_dir="../runs")    # notebook 01
    explore_tokens.rlhf_tokens(run="demo", runs_dir="../runs")   # notebook 05

``tokenizers``: one text, cut by each algorithm (BPE, WordPiece, Unigram) as chips with their
ids, token counts and characters per token; and a next-token probe of the pretrained model.
Stage 1 trains one kind; the other two are trained here on the same documents the first time
the explorer opens, and kept in ``01_pretrain/tokenizers/<kind>/`` (written whole with
``runs.atomic_dir``, with the data hash they were trained on, so a re-run of stage 1 on other
text trains them again).

``rlhf_tokens``: a prompt and a response (sampled, or typed), each token coloured by
log pi_policy - log pi_SFT; hovering a token shows both probabilities and the five most likely
tokens there under each model, and the response's summed exact KL is shown beside it: where
the KL leash is spent (``ppo_eval.token_kl``). The policy is PPO's (stage 5's merged model) or
one of stage 6's adapters; the reference is the SFT model, PPO's reference.

Both are built like every explorer (``labkit.explore``).
"""

from __future__ import annotations

import math
import time

import torch

from .explore import (Explorer, ExploreError, check_text, example_options, examples, found, launch, load_policy,
                      load_tokenizer, need_policies, open_run, policies, sample, short, showcase)
from .models import max_positions, objective_of
from .ppo_eval import token_kl
from .runs import STAGE_DIRS, Run, atomic_dir, atomic_write_json, read_json, text_hash
from .textdata import TEXT_SETTINGS, load_corpus
from .tokenizer import KINDS, train_tokenizer

TEXT = "Mara gave the red kite to Tobin. 12 + 7 = 19. Café ☕"  # notebook 01's sentence
PREFIX = "One morning,"
SATURATE_NATS = 3.0  # a log-ratio this large (either way) gets the strongest colour


# --- the tokenizer explorer ------------------------------------------------------------------------

def stage_tokenizers(r: Run) -> tuple[dict, str]:
    """({kind: tokenizer}, what was done): stage 1's own kind first, then the other two, trained on stage 1's
    documents and kept beside it, or read from there when they match its data and vocabulary size."""
    stage = r.path / STAGE_DIRS["pretrain"]
    if not r.is_complete("pretrain") or not (stage / "tokenizer").is_dir():
        raise ExploreError(f"the tokenizer explorer needs stage 1's tokenizer, and {found(r)}")
    cfg = read_json(stage / "config.json", {})
    own = cfg.get("tokenizer", "bpe")
    out = {own: load_tokenizer(stage / "tokenizer")}
    wanted = {"data_hash": read_json(stage / "data.json", {}).get("data_hash"), "vocab_size": cfg.get("vocab_size")}
    docs, trained, t0 = None, [], time.perf_counter()
    for kind in [k for k in KINDS if k != own]:
        folder = stage / "tokenizers" / kind
        source = read_json(folder / "source.json", {})
        if any(source.get(k) != v for k, v in {**wanted, "kind": kind}.items()):
            if docs is None:  # stage 1's training documents, from the settings in its config.json
                docs = load_corpus(**{k: cfg.get(k, v) for k, v in TEXT_SETTINGS.items()})[0]
            tok = train_tokenizer(docs, kind, cfg.get("vocab_size", 1024))
            with atomic_dir(folder) as d:
                tok.save_pretrained(d)
                atomic_write_json(d / "source.json", {**wanted, "kind": kind, "docs_hash": text_hash(docs)})
            trained.append(kind)
        out[kind] = load_tokenizer(folder)
    note = (f"trained {' and '.join(trained)} on stage 1's {len(docs):,} documents in "
            f"{time.perf_counter() - t0:.1f} s (kept in the run's 01_pretrain/tokenizers/)") if trained else ""
    return out, note


def tokenize(tok, text: str) -> dict:
    """Pieces, ids and counts of ``text`` under one tokenizer."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return {"ids": ids, "pieces": tok.convert_ids_to_tokens(ids), "tokens": len(ids), "chars": len(text),
            "chars_per_token": len(text) / len(ids) if ids else None,
            "unknown": sum(i == tok.unk_token_id for i in ids), "vocab_size": len(tok)}


@torch.no_grad()
def next_tokens(model, tok, prefix: str, k: int = 10) -> list[tuple[str, float]]:
    """The model's ``k`` most likely next tokens after ``prefix`` (read as the start of a document: stage 1's
    stream puts EOS between documents) with their probabilities."""
    ids = [tok.eos_token_id] + tok(prefix, add_special_tokens=False)["input_ids"]
    limit = max_positions(model)
    if limit and len(ids) > limit:
        raise ExploreError(f"the prefix is {len(ids)} tokens; the model reads at most {limit}")
    x = torch.tensor([ids], device=next(model.parameters()).device)
    probs = torch.softmax(model(input_ids=x).logits[0, -1].float(), -1)
    p, i = probs.topk(k)
    return [(tok.decode([t]), q) for t, q in zip(i.tolist(), p.tolist())]


class Tokenizers(Explorer):
    """The same text under each tokenizer, and the pretrained model's next-token guesses."""

    kind, title = "tokenizers", "Tokenizers: one text, three ways to cut it"
    help = "Type in either box. Hover over a chip for its id. The probe reads the prefix as the start of a document."

    def __init__(self, r: Run):
        super().__init__()
        self.run = r
        self.toks, note = stage_tokenizers(r)
        pre = r.path / STAGE_DIRS["pretrain"] / "model"
        self.objective = objective_of(pre) if pre.is_dir() else None
        self.values = {"text": TEXT, "prefix": PREFIX}
        self.say(note)

    def controls(self):
        return [{"id": "text", "type": "textarea", "label": "text", "rows": 2},
                {"id": "prefix", "type": "text", "label": "next-token probe: prefix"}]

    def rows(self, text: str) -> list[dict]:
        return [{"tokenizer": kind, **tokenize(tok, text)} for kind, tok in self.toks.items()]

    def probe(self) -> list[tuple[str, float]]:
        if "pretrained" not in policies(self.run):
            raise ExploreError(f"the next-token probe needs stage 1's causal model; it is {self.objective or 'missing'}")
        if not self.values["prefix"].strip():
            raise ExploreError("type a prefix for the next-token probe")
        model, tok = load_policy(self.run, "pretrained")
        return next_tokens(model, tok, self.values["prefix"])

    def sections(self):
        text = self.values["text"]
        rows = self.rows(text)
        own = next(iter(self.toks))
        chips = [{"label": r["tokenizer"] + (" (stage 1's)" if r["tokenizer"] == own else ""),
                  "note": f"{r['tokens']} tokens" + (f" \u00b7 {r['chars_per_token']:.2f} characters per token"
                                                     if r["tokens"] else ""),
                  "chips": [{"text": p, "hue": n, "detail": f"id {i} \u00b7 token {p!r}"}
                            for n, (p, i) in enumerate(zip(r["pieces"], r["ids"]))]} for r in rows]
        out = [{"type": "tokens", "title": "Tokens" if text else "Tokens (type some text)", "rows": chips},
               {"type": "table", "title": "Counts", "columns": ["tokenizer", "tokens", "characters",
                                                                "characters per token", "unknown", "vocabulary"],
                "rows": [[r["tokenizer"], r["tokens"], r["chars"], "" if r["chars_per_token"] is None else
                          f"{r['chars_per_token']:.2f}", r["unknown"], r["vocab_size"]] for r in rows]}]
        try:
            top = self.probe()
            out.append({"type": "table", "title": f"Next token after {short(self.values['prefix'], 60)!r} "
                                                  "(pretrained model)",
                        "columns": ["rank", "token", "probability"],
                        "rows": [[n + 1, repr(t), f"{100 * p:.1f}%"] for n, (t, p) in enumerate(top)]})
        except ExploreError as e:
            out.append({"type": "text", "text": str(e)})
        return out

    def static_table(self):
        import pandas as pd
        rows = []
        for text in (TEXT, examples(self.run, 1)[0]["prompt"]):
            rows += [{"text": short(text, 60), "tokenizer": r["tokenizer"], "tokens": r["tokens"],
                      "chars_per_token": round(r["chars_per_token"], 2), "pieces": " | ".join(r["pieces"][:24])}
                     for r in self.rows(text)]
        return pd.DataFrame(rows)


def tokenizers(run="demo", runs_dir="runs", interactive: bool | None = None):
    """The tokenizer explorer over run ``run``'s stage 1."""
    return launch("tokenizers", lambda: Tokenizers(open_run(run, runs_dir)), interactive)


# --- what RLHF changed, token by token ---------------------------------------------------------------

def detail(row: dict, name: str) -> str:
    """What hovering a token shows: both probabilities, the log-ratio and KL there, both top-5s."""
    def top(pairs):
        return ", ".join(f"{t!r} {p:.3f}" for t, p in pairs)
    return (f"token {row['token']!r} (position {row['position']})\n"
            f"{name}: p={math.exp(row['logprob']):.3f} (log {row['logprob']:+.3f})   "
            f"SFT: p={math.exp(row['ref_logprob']):.3f} (log {row['ref_logprob']:+.3f})\n"
            f"log-ratio {row['k1']:+.3f} nats \u00b7 KL here {row['kl']:.3f} nats\n"
            f"{name} top-5: {top(row['top'])}\nSFT top-5: {top(row['ref_top'])}")


def spent(rows: list[dict]) -> dict:
    """The response's KL bill: summed exact KL, summed log-ratio, and how concentrated the KL is."""
    kl = sum(r["kl"] for r in rows)
    ranked = sorted(rows, key=lambda r: -r["kl"])
    top3 = sum(r["kl"] for r in ranked[:3])
    return {"kl": kl, "log_ratio": sum(r["k1"] for r in rows), "tokens": len(rows),
            "top3_share": top3 / kl if kl > 0 else None, "ranked": ranked}


class TokenChanges(Explorer):
    """One response, each token coloured by how much more (red) or less (blue) likely the policy makes it."""

    kind, title = "rlhf_tokens", "What RLHF changed, token by token"
    help = ("Red: the policy makes the token more likely than SFT did; blue: less. Hover over a token. The KL "
            "is at the sampling temperature, summed over the response's tokens (its end included).")

    def __init__(self, r: Run, policy: str = "ppo"):
        super().__init__()
        self.run = r
        need_policies(r, ["sft", policy], "the token view")
        self.choices = [n for n in policies(r) if n not in ("pretrained", "sft")]
        self.examples = examples(r)
        self.by_id = {t["id"]: t for t in self.examples}
        ppo_cfg = read_json(r.path / STAGE_DIRS["ppo"] / "config.json", {})
        self.temperature = ppo_cfg.get("temperature", 1.0)
        self.max_new_tokens = ppo_cfg.get("max_new_tokens", 32)
        first = showcase(self.examples, 1)[0]
        self.values = {"example": first["id"], "prompt": first["prompt"], "response": "", "policy": policy}
        self.rows: list[dict] = []
        self.draws = 0

    def controls(self):
        name = self.values["policy"]
        return [{"id": "example", "type": "select", "label": "held-out example", "options": example_options(self.examples)},
                {"id": "prompt", "type": "textarea", "label": "prompt", "rows": 2},
                {"id": "response", "type": "textarea", "label": "response (sample one, or type it)", "rows": 2},
                {"id": "policy", "type": "select", "label": "policy", "options": [[n, n] for n in self.choices]},
                {"id": "sample_policy", "type": "button", "label": f"Sample from {name}"},
                {"id": "sample_sft", "type": "button", "label": "Sample from SFT"},
                {"id": "show", "type": "button", "label": "Show tokens"}]

    def set(self, name, value):
        super().set(name, value)
        if name == "example" and self.values["example"]:
            self.values["prompt"] = self.by_id[self.values["example"]]["prompt"]

    def click(self, name):
        if name in ("sample_policy", "sample_sft"):
            self.draw_response(self.values["policy"] if name == "sample_policy" else "sft")
        if name in ("sample_policy", "sample_sft", "show"):
            self.compute()

    def start(self):
        self.draw_response(self.values["policy"])
        self.compute()

    def draw_response(self, who: str) -> str:
        prompt = check_text(self.values["prompt"])
        model, tok = load_policy(self.run, who)
        self.draws += 1  # a new sample on every click, the same sequence in every session
        g = sample(model, tok, [prompt], 1, self.temperature, 1.0, self.max_new_tokens, self.draws)[0]
        self.values["response"] = g["response"]
        return g["response"]

    def compute(self) -> list[dict]:
        prompt = check_text(self.values["prompt"])
        response = check_text(self.values["response"], "the response", allow_empty=True)
        policy, tok = load_policy(self.run, self.values["policy"])
        ref, _ = load_policy(self.run, "sft")
        t0 = time.perf_counter()
        n = len(tok(prompt, add_special_tokens=False).input_ids) + len(tok(response, add_special_tokens=False).input_ids)
        limit = max_positions(policy)
        if limit and n + 3 > limit:  # + the chat markers and EOS
            raise ExploreError(f"the prompt and response are {n} tokens; the model reads at most {limit}: shorten them")
        self.rows = token_kl(policy, ref, tok, prompt, response, self.temperature, top_k=5)
        self.say(f"{self.values['policy']} against SFT, {len(self.rows)} tokens, in {time.perf_counter() - t0:.2f} s.")
        return self.rows

    def sections(self):
        if not self.rows:
            return []
        name, bill = self.values["policy"], spent(self.rows)
        note = f"\u03a3 KL {bill['kl']:.3f} nats over {bill['tokens']} tokens \u00b7 \u03a3 log-ratio {bill['log_ratio']:+.3f}"
        if bill["top3_share"] is not None:
            note += f" \u00b7 {100 * bill['top3_share']:.0f}% of the KL in its 3 costliest tokens"
        chips = [{"text": r["token"], "heat": max(-1.0, min(1.0, r["k1"] / SATURATE_NATS)), "detail": detail(r, name)}
                 for r in self.rows]
        total = bill["kl"] or 1.0
        return [{"type": "tokens", "title": f"log \u03c0_{name} \u2212 log \u03c0_SFT per token", "rows": [
                    {"label": "response", "note": note, "chips": chips}]},
                {"type": "table", "title": "Where the KL is spent", "columns": ["position", "token", "KL (nats)",
                                                                               "share", "log-ratio"],
                 "rows": [[r["position"], repr(r["token"]), f"{r['kl']:.3f}", f"{100 * r['kl'] / total:.0f}%",
                           f"{r['k1']:+.3f}"] for r in bill["ranked"][:5]]}]

    def static_table(self):
        import pandas as pd
        out = []
        for task in showcase(self.examples, 3):
            self.values["prompt"] = task["prompt"]
            self.draw_response(self.values["policy"])
            bill = spent(self.compute())
            top = bill["ranked"][0]
            out.append({"family": task["family"], "prompt": short(task["prompt"], 70), "response": self.values["response"],
                        "sum_kl": round(bill["kl"], 3), "sum_log_ratio": round(bill["log_ratio"], 3),
                        "costliest_token": top["token"], "its_kl": round(top["kl"], 3),
                        "its_log_ratio": round(top["k1"], 3)})
        return pd.DataFrame(out)


def rlhf_tokens(run="demo", runs_dir="runs", policy: str = "ppo", interactive: bool | None = None):
    """The token view of run ``run``: ``policy`` (stage 5's PPO, or a stage 6 method) against SFT."""
    return launch("rlhf_tokens", lambda: TokenChanges(open_run(run, runs_dir), policy), interactive)
