"""Why SFT's task accuracy moves so much from seed to seed: model or draw, init or data order, or rounding.

    .venv/bin/python benchmarks/sft_stability.py pretrain --seeds 0,1,2            # stage 1 per seed
    .venv/bin/python benchmarks/sft_stability.py sft --pretrain 0 --seed 0          # one SFT run and its curve
    .venv/bin/python benchmarks/sft_stability.py sft --pretrain 1 --seed 0          # init alone (another stage 1)
    .venv/bin/python benchmarks/sft_stability.py sft --pretrain 0 --seed 0 --data-seed 1   # data order alone
    .venv/bin/python benchmarks/sft_stability.py sft --pretrain 0 --seed 0 --threads 2     # float summation order
    .venv/bin/python benchmarks/sft_stability.py sft --pretrain 0 --seed 0 --aten default  # another instruction set
    .venv/bin/python benchmarks/sft_stability.py sft --pretrain 2 --seed 2 --story-loss 40  # + each story question's
                                                                          # answer loss on SFT's own distribution
    .venv/bin/python benchmarks/sft_stability.py report                             # cross-evaluation + JSON

Every SFT run is a run folder under ``--work`` (stage 1 copied from ``pt-<pretrain>``) whose name says
what differs; it records, every ``--every`` steps, the greedy task accuracy per answer family on its own
held-out tasks (``curve.json``: a diagnosis of *when* accuracy comes and goes, never used to choose a
setting). ``report`` evaluates every SFT model on every seed's held-out tasks (separating the model from
the draw of questions) and writes ``benchmarks/results/sft_stability.json``; a model that JSON already holds
(the same accuracy and last training loss) is read back, not evaluated again. A run folder copied in from
``seeds.py`` or ``labkit train`` (no ``curve.json``) is labelled by the SFT settings its config changes.
Extra SFT settings pass through ``-p name=value`` (``-p learning_rate=3e-4``), and the folder name records
them.
"""
import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import commit, machine  # noqa: E402  (the machine record every benchmark of runs writes)

WORK = Path("runs/stability")


def suffix(params: list[str], mark: str = "") -> str:
    """Settings as a folder-name suffix: ["max_steps=2000"] -> "_max_steps-2000" (``mark`` after each "_")."""
    return "".join(f"_{mark}{p.replace('=', '-')}" for p in params)


def pt_name(seed: int, params: list[str]) -> str:
    """A stage 1's folder: ``pt-<seed>``, plus its settings other than the preset's (``pt-0_max_steps-1200``)."""
    return f"pt-{seed}" + suffix(params)


def sft_name(a) -> str:
    extra = suffix(a.param) + suffix(a.pretrain_param, "pt.")
    return (f"sft-pt{a.pretrain}-s{a.seed}" + (f"-d{a.data_seed}" if a.data_seed is not None else "")
            + f"-t{a.threads}" + (f"-{a.aten}" if a.aten else "") + extra)


def cmd_pretrain(a) -> None:
    from labkit import runner
    from labkit.runs import Run
    from labkit.runner import parse_params
    for seed in (int(s) for s in a.seeds.split(",")):
        name = pt_name(seed, a.param)
        if not Run(name, a.work).is_complete("pretrain"):
            runner.train_stage("pretrain", name, a.work, a.preset,
                               {"seed": seed, "threads": a.threads, **parse_params(a.param)})
        print(f"{name}: done", flush=True)


def cmd_sft(a) -> None:
    if a.aten and os.environ.get("ATEN_CPU_CAPABILITY") != a.aten:  # must be set before torch is imported
        env = {**os.environ, "ATEN_CPU_CAPABILITY": a.aten}
        raise SystemExit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    import torch
    from transformers import TrainerCallback

    from labkit import sft
    from labkit import world as W
    from labkit.generate import score_tasks
    from labkit.runner import parse_params
    from labkit.runs import Run, atomic_write_json

    name = sft_name(a)
    r = Run(name, a.work)
    if r.is_complete("sft"):
        print(f"{name}: already done", flush=True)
        return
    src = Run(pt_name(a.pretrain, a.pretrain_param), a.work)
    with r.lock():  # run.json is written only under the run's lock
        shutil.copytree(src.stage_dir("pretrain"), r.stage_dir("pretrain"), dirs_exist_ok=True)
        r.update_manifest(world_seed=src.manifest().get("world_seed", 0))
        r.complete("pretrain", 0.0, src.manifest()["stages"]["pretrain"]["headline"])
    # The validation loss on SFT's own distribution rides along (n_val: other draws of the training side, never
    # a held-out task), so the curve shows whether a checkpoint chosen by it would have been a good one.
    cfg = sft.config(a.preset, seed=a.seed, threads=a.threads, data_seed=a.data_seed,
                     **{"n_val": 280, "eval_interval": a.every, **parse_params(a.param)})
    _, held = sft.world_tasks(r.world(), cfg)
    answers = [t for t in held if t["family"] in W.ANSWER_FAMILIES]
    # Per story question, the answer loss on SFT's own distribution (training names, SFT's phrasings): what a
    # rule may read, unlike the held-out curve (docs/how-it-works.md, Stage 2, point 14).
    own_story = []
    if a.story_loss:
        from story_qa import answer_loss, questions, stories
        own_story = questions(stories(r.world(), a.story_loss, a.seed)["train"], "train")
    curve = []

    class Curve(TrainerCallback):  # the held-out curve: a diagnosis, never a way to pick a setting
        def on_step_end(self, args, state, control, model=None, tokenizer=None, processing_class=None, **kw):
            if state.global_step % a.every == 0 or state.global_step == state.max_steps:
                with torch.random.fork_rng():
                    s = score_tasks(model, processing_class, answers, max_new_tokens=cfg.eval_max_new_tokens)
                curve.append({"step": state.global_step, "task_accuracy": s["accuracy"], **s["per_family"]})
                if own_story:
                    losses = answer_loss(model, processing_class, own_story)
                    curve[-1]["own_story_loss"] = {k: sum(x for t, x in zip(own_story, losses) if t["key"] == k)
                                                   / sum(t["key"] == k for t in own_story) for k in W._STORY_Q}
                model.train()

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            point = next((c for c in curve if c["step"] == state.global_step), None)
            if point is not None and metrics and "eval_loss" in metrics:
                point["val_loss"] = metrics["eval_loss"]

    t0 = time.time()
    res = sft.run(cfg, run=name, runs_dir=a.work, live=False, progress_bar=False, callbacks=[Curve()])
    atomic_write_json(r.path / "curve.json", {"command": shlex.join(["benchmarks/sft_stability.py"] + sys.argv[1:]),
                                              "curve": curve, "seconds": time.time() - t0, "threads": a.threads,
                                              "aten": a.aten or "native", "params": a.param, "pretrain": a.pretrain,
                                              "seed": a.seed, "data_seed": a.data_seed})
    print(f"{name}: task accuracy {res['sft/task_accuracy']:.1f}", flush=True)


def cmd_report(a) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labkit import pretrain, sft
    from labkit import world as W
    from labkit.generate import score_tasks
    from labkit.runs import Run, read_json

    torch.set_num_threads(a.threads)
    runs = sorted(p.name for p in Path(a.work).glob("sft-*") if Run(p.name, a.work).is_complete("sft"))
    seeds = sorted({int(n.split("-s")[1].split("-")[0]) for n in runs})
    held = {s: [t for t in sft.world_tasks(W.World(0), sft.config(a.preset, seed=s, n_train_tasks=0))[1]
                if t["family"] in W.ANSWER_FAMILIES] for s in seeds}
    before = read_json(Path(a.out), {})  # models already evaluated are read back, not evaluated again
    preset_sft = dataclasses.asdict(sft.config(a.preset))
    out = {}
    for name in runs:
        run = Run(name, a.work)
        d = run.stage_dir("sft")
        ev, curve = read_json(d / "eval.json"), read_json(d.parent / "curve.json", {})
        curve = curve or copied_settings(read_json(d / "config.json"), preset_sft)
        final_loss = next((m["sft/loss"] for m in reversed(read_json_lines(d / "metrics.jsonl")) if "sft/loss" in m), None)
        old = (before.get("runs") or {}).get(name)
        # the same model: its accuracy and last training loss agree to the last digit, and every draw is there
        if old and (old["task_accuracy"], old["final_loss"]) == (ev.get("sft/task_accuracy"), final_loss) \
                and all(str(s) in old["on_seed_draws"] for s in seeds):
            out[name] = old
            print(name, "(already evaluated)", flush=True)
            continue
        model = AutoModelForCausalLM.from_pretrained(d / "model")
        tok = AutoTokenizer.from_pretrained(d / "model")
        cross = {}
        for s, tasks in held.items():
            sc = score_tasks(model, tok, tasks, max_new_tokens=20)
            cross[str(s)] = {"task_accuracy": sc["accuracy"], **sc["per_family"]}
        out[name] = {**parse_name(name), "task_accuracy": ev.get("sft/task_accuracy"), "drift_ppl": ev.get("sft/drift_ppl"),
                     "arithmetic_probe": arithmetic_probe(model, tok),
                     "per_family": {f: ev.get(f"sft/accuracy_{f}") for f in W.ANSWER_FAMILIES if f"sft/accuracy_{f}" in ev},
                     "on_seed_draws": cross, "curve": curve.get("curve"), "params": curve.get("params"),
                     "threads": curve.get("threads"), "aten": curve.get("aten"), "final_loss": final_loss,
                     "command": curve.get("command"), "copied_from": run.manifest().get("copied_from")}
        print(name, f"{out[name]['task_accuracy']:.1f}", {k: round(v["task_accuracy"], 1) for k, v in cross.items()},
              flush=True)
    stage1 = {}
    preset = dataclasses.asdict(pretrain.config(a.preset))  # a stage 1 is labelled by the settings it changed
    for p in sorted(Path(a.work).glob("pt-*")):
        if Run(p.name, a.work).is_complete("pretrain"):
            ev = read_json(p / "01_pretrain" / "eval.json")
            old = (before.get("stage1") or {}).get(p.name)
            if old and old.get("val_ppl") == ev.get("pretrain/val_ppl"):
                stage1[p.name] = old
                continue
            model = AutoModelForCausalLM.from_pretrained(p / "01_pretrain" / "model")
            tok = AutoTokenizer.from_pretrained(p / "01_pretrain" / "model")
            cfg = read_json(p / "01_pretrain" / "config.json")
            changed = settings_changed(cfg, preset)
            stage1[p.name] = {"seed": cfg["seed"], "params": changed, "val_ppl": ev.get("pretrain/val_ppl"),
                              "arithmetic_probe": arithmetic_probe(model, tok)}
            print(p.name, stage1[p.name]["arithmetic_probe"], flush=True)
    batches = {str(s): batch_composition(a.preset, s, Path(a.work) / f"pt-{s}" / "01_pretrain" / "model")
               for s in seeds if (Path(a.work) / f"pt-{s}").exists()}
    Path(a.out).write_text(json.dumps({"command": shlex.join(["benchmarks/sft_stability.py"] + sys.argv[1:]),
                                       "commit": commit(), "preset": a.preset, "date": time.strftime("%Y-%m-%d"),
                                       "machine": machine(), "runs": out, "stage1": stage1, "batches": batches},
                                      indent=1) + "\n")
    print(f"wrote {a.out}")


def settings_changed(conf: dict, preset: dict, skip=("seed", "threads")) -> list[str]:
    """A stage's config.json as the settings it changes from the preset's ("max_steps=4000"), leaving out ``skip``."""
    return [f"{k}={v}" for k, v in conf.items() if k not in skip and preset.get(k, v) != v]


def copied_settings(conf: dict, preset: dict) -> dict:
    """A run of seeds.py or ``labkit train`` copied into ``--work`` has no curve.json: it is labelled by the SFT
    settings its config.json changes from the preset's (as a folder name of this script records them), and its
    thread count. Its seed and data order are in its folder name."""
    return {"params": settings_changed(conf, preset, ("seed", "threads", "data_seed")), "threads": conf.get("threads")}


def batch_composition(preset: str, seed: int, tokenizer_dir: Path, n_batches: int = 2000) -> dict:
    """What SFT's batches hold, in random order and grouped by length (``group_by_length``): the share of the
    computed positions that are real tokens, and how many of a batch's examples share its commonest family.
    Lengths are prompt + completion tokens as TRL builds them (capped at ``max_length``); no model is run."""
    import collections

    import torch
    from transformers import AutoTokenizer

    from labkit import sft
    from labkit import world as W
    from labkit.tokenizer import to_prompt_completion
    from labkit.training import LengthGroupedBatches
    cfg = sft.config(preset, seed=seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    train, _ = sft.world_tasks(W.World(0), cfg)
    rows = to_prompt_completion(tok, train)
    lengths = [min(cfg.max_length, len(tok(r["prompt"], add_special_tokens=False).input_ids)
                   + len(tok(r["completion"], add_special_tokens=False).input_ids)) for r in rows]
    fams = [t["family"] for t in train]
    gen, grouped = torch.Generator().manual_seed(seed), LengthGroupedBatches(lengths, cfg.batch_size, seed)
    orders = {"random": lambda: torch.randperm(len(rows), generator=gen).tolist(),  # one epoch per call
              "group_by_length": lambda: list(grouped)}
    out = {}
    for name, epoch in orders.items():
        idx = []
        while len(idx) < n_batches * cfg.batch_size:
            idx += epoch()
        batches = [idx[i:i + cfg.batch_size] for i in range(0, n_batches * cfg.batch_size, cfg.batch_size)]
        real = sum(lengths[i] for b in batches for i in b)
        computed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        top = [collections.Counter(fams[i] for i in b).most_common(1)[0][1] / len(b) for b in batches]
        out[name] = {"real_token_share": real / computed, "commonest_family_share": sum(top) / len(top),
                     "families_per_batch": sum(len({fams[i] for i in b}) for b in batches) / len(batches)}
    return {"batches": n_batches, "batch_size": cfg.batch_size, "families": len(set(fams)), **out}


# The sentence forms pretraining states sums and differences in (world.reasoning), cut before the answer.
PROBE_FORMS = {"+": ("{x} plus {y} is", "{x} + {y} ="), "-": ("{x} minus {y} is", "{x} - {y} =")}


def arithmetic_probe(model, tok) -> dict:
    """Does the model *know* single-digit facts in the form pretraining states them? Greedy completions of every
    sum and difference in both forms, per side of the split: the facts SFT trains on, and the held-out ones that
    evaluation asks (``world.HELD_OUT_FACTS``), which only pretraining text states."""
    import torch

    from labkit import world as W
    right = {(op, side): [0, 0] for op in PROBE_FORMS for side in ("train", "eval")}
    for op, forms in PROBE_FORMS.items():
        for x in range(W.MAX_OPERAND + 1):
            for y in range(W.MAX_OPERAND + 1):
                if op == "-" and y > x:
                    continue
                for form in forms:
                    ids = tok(form.format(x=x, y=y), return_tensors="pt").input_ids
                    with torch.no_grad():
                        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
                    said = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip().split(" ")[0].rstrip(".")
                    side = right[op, W.fact_split(op, x, y)]
                    side[0] += said == str(x + y if op == "+" else x - y)
                    side[1] += 1
    name = {"+": "sums", "-": "differences", "train": "trained", "eval": "held_out"}
    return {f"{name[op]}_{name[side]}": {"right": 100 * ok / n, "statements": n} for (op, side), (ok, n) in right.items()}


def parse_name(name: str) -> dict:
    """What ``sft_name`` put in a run's name: its stage 1, SFT seed and data order."""
    parts = name.split("-")
    get = lambda prefix: next((int(x[len(prefix):]) for x in parts if x.startswith(prefix) and x[len(prefix):].isdigit()), None)  # noqa: E731
    return {"pretrain": get("pt"), "seed": get("s"), "data_seed": get("d"),
            "pretrain_params": [x.replace("-", "=", 1) for x in name.split("_pt.")[1:]]}


def read_json_lines(path):
    from labkit.runs import read_jsonl
    return read_jsonl(path, on_error="skip")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("pretrain", "sft", "report"):
        p = sub.add_parser(name)
        p.add_argument("--work", default=str(WORK))
        p.add_argument("--preset", default="cpu")
        p.add_argument("--threads", type=int, default=1)
    sub.choices["pretrain"].add_argument("--seeds", default="0,1,2")
    s = sub.choices["sft"]
    s.add_argument("--pretrain", type=int, default=0, help="which stage 1 (pt-<n>) to fine-tune")
    s.add_argument("--seed", type=int, default=0, help="SFT's seed: its tasks, aligned demonstrations, held-out draw")
    s.add_argument("--data-seed", type=int, default=None, help="the order of the same examples alone")
    s.add_argument("--aten", default=None, help="ATEN_CPU_CAPABILITY for this run (default, avx2, avx512)")
    s.add_argument("--every", type=int, default=100, help="steps between points of the held-out curve")
    s.add_argument("-p", "--param", action="append", default=[], help="another SFT setting, name=value")
    s.add_argument("--story-loss", type=int, default=0,
                   help="stories whose per-question answer loss on SFT's own distribution each curve point records")
    s.add_argument("--pretrain-param", action="append", default=[],
                   help="the stage 1 made with this setting (`pretrain --seeds N -p name=value`)")
    sub.choices["pretrain"].add_argument("-p", "--param", action="append", default=[],
                                         help="another stage-1 setting, name=value (the folder name records it)")
    sub.choices["report"].add_argument("--out", default="benchmarks/results/sft_stability.json")
    a = ap.parse_args()
    {"pretrain": cmd_pretrain, "sft": cmd_sft, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
