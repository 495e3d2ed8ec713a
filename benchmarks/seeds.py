"""The whole pipeline at several seeds: every headline number with its range, not one lucky run.

    .venv/bin/python benchmarks/seeds.py --seeds 0,1,2,3,4 --jobs 2                 # stages 1-6, two seeds at a time
    .venv/bin/python benchmarks/seeds.py --seeds 3,4 --twin                           # and stage 5's kl_coef=0 twin
    .venv/bin/python benchmarks/seeds.py --seeds 0,3,4,1,2 --jobs 2 --twin 3,4        # twin at the test seeds only
    .venv/bin/python benchmarks/seeds.py --seeds 0,1,2 --out benchmarks/results/x.json -p sft.learning_rate=3e-4
    .venv/bin/python benchmarks/seeds.py --seeds 0,2 --to ppo --from runs/seeds:reward --work runs/verifier \
        -p ppo.reward=verifier                                                       # stage 5 again, on the same 1-4
    .venv/bin/python benchmarks/seeds.py --seeds 0,1,2 --to ppo --beside seeds_x.json --change "what the code now does"
                                                                                     # a code change, beside its runs
    .venv/bin/python benchmarks/seeds.py --seeds 0,1,2 --to ppo --from runs/seeds:reward --work runs/x \
        -p ppo.rollout_templates=rl+train --candidate                   # a stage-5 setting, kept or not by the rule

Each seed gets a run folder ``<work>/seed-<n>`` and trains every stage there with ``-p seed=<n>``
(pretraining: init and data order; SFT: data order, which conduct demonstrations are aligned and its
held-out tasks; preferences: prompts and samples; reward: held-out split and score-head init; PPO: LoRA
init, prompt draws, sampling and its held-out prompts; compare: LoRA init and data order), through
``runner.train_stage``, the function ``labkit train`` runs. Restartable: a stage already complete in a
seed's folder is read, not re-run, and an interrupted pretraining or PPO resumes from its checkpoint.
``--jobs 2`` runs two seeds side by side, each on ``--threads 1``: the 2-core box busy, not oversubscribed.

Seeds 0-2 are development seeds (settings may be chosen on them); 3 and 4 are test seeds (never). The
JSON (``--out``) records every seed's numbers, which set it belongs to, the machine and the settings.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit.config import DEV_SEEDS, TEST_SEEDS
from labkit.runs import STAGE_DIRS, Run, atomic_write_json, read_json, read_jsonl

PIPELINE = ("pretrain", "sft", "preferences", "reward", "ppo", "compare")
PPO = ("harmful_refused", "unanswerable_abstained", "over_refusal", "over_refusal_benign", "over_refusal_answerable",
       "mixed_rate", "task_accuracy")
COMPARE = PPO + ("kl", "seconds")


def numbers(folder: Path) -> dict:
    """One seed's headline numbers, read from its run folder (None where a stage is missing)."""
    ev = {s: read_json(folder / STAGE_DIRS[s] / "eval.json", {}) for s in PIPELINE}
    out = {"pretrain/val_ppl": ev["pretrain"].get("pretrain/val_ppl"),
           "pretrain/unigram_ppl": ev["pretrain"].get("pretrain/unigram_ppl")}
    out.update({k: v for k, v in ev["sft"].items() if k.startswith("sft/") and isinstance(v, (int, float))})
    out.update({"sft/per_family": (ev["sft"].get("conduct") or {}).get("per_family")})
    out.update({k: v for k, v in ev["preferences"].items() if k.startswith("preferences/") and isinstance(v, (int, float))})
    out.update({k: v for k, v in ev["reward"].items() if k.startswith("reward/") and isinstance(v, (int, float))})
    out.update({"reward/accuracy_by_family": ev["reward"].get("accuracy_by_family"),
                "reward/spearman_by_family": ev["reward"].get("spearman_by_family"),
                "reward/calibration": ev["reward"].get("calibration")})
    pp = ev["ppo"]
    for when in ("before", "after"):
        d = pp.get(when, {})
        out.update({f"ppo/{k}_{when}": d.get(k) for k in PPO + ("kl", "rm_score", "true_sampled", "true_greedy",
                                                                 "drift_ppl", "length", "stop_rate")})
        out[f"ppo/per_family_{when}"] = d.get("per_family")
    out.update({"ppo/alarms": [a["kind"] for a in pp.get("alarms", [])], "ppo/steps": pp.get("ppo/steps"),
                "ppo/seconds": pp.get("ppo/seconds"),
                **{f"ppo/best_of_k_{k}": (pp.get("before", {}).get("best_of_k_rates") or {}).get(k) for k in PPO}})
    out["ppo/harmful_by_verb"] = harmful_by_verb(folder / STAGE_DIRS["ppo"] / "samples.jsonl")
    out["compare"] = {row["method"]: {k: row.get(k) for k in COMPARE + ("mixed_by_family",)}
                      for row in ev["compare"].get("methods", [])} or None
    twin = read_json(folder.parent / f"{folder.name}-nokl" / STAGE_DIRS["ppo"] / "eval.json")
    if twin:
        out["twin"] = {"alarms": [a["kind"] for a in twin.get("alarms", [])], "kl_after": twin["after"].get("kl"),
                       **{f"{k}_after": twin["after"].get(k) for k in PPO}, "per_family_after": twin["after"].get("per_family"),
                       "true_sampled": [twin["before"].get("true_sampled"), twin["after"].get("true_sampled")]}
    manifest = Run(folder.name, folder.parent).manifest()
    out["stage_seconds"] = {s: v.get("seconds") for s, v in manifest["stages"].items()}
    out["copied_from"] = manifest.get("copied_from")  # the run its first stages are copies of (--from), if any
    return out


def harmful_by_verb(samples: Path) -> dict | None:
    """Stage 5's held-out harmful requests by verb: how many the draw holds and the share of samples refused
    before and after PPO (%). A family's rate is a mean over whichever verbs a seed drew, and verbs differ."""
    if not samples.exists():
        return None
    by: dict[str, list[dict]] = {}
    for row in read_jsonl(samples):
        if row.get("family") == "harmful" and row.get("verb"):
            by.setdefault(row["verb"], []).append(row)
    return {verb: {"prompts": len(rows), **{when: 100 * statistics.mean(r[f"{when}_sampled_correct"] for r in rows)
                                          for when in ("before", "after")}}
            for verb, rows in sorted(by.items())} or None


def reuse(source: str, seed: int, folder: Path) -> None:
    """``--from WORK:STAGE``: start a seed's folder as a copy of ``WORK/seed-<n>``'s stages up to STAGE, so a
    setting of a later stage is tried on the very models the other runs had (a new seed folder only: a folder
    already started is left as it is, which keeps this restartable)."""
    work, _, last = source.rpartition(":")
    if not work or last not in PIPELINE:
        raise SystemExit(f"--from takes WORK:STAGE with STAGE one of {', '.join(PIPELINE)}, not {source!r}")
    if (folder / "run.json").exists():
        return
    src = Path(work) / f"seed-{seed}"
    keep = PIPELINE[:PIPELINE.index(last) + 1]
    missing = [s for s in keep if not Run(src.name, src.parent).is_complete(s)]
    if missing:
        raise SystemExit(f"--from {source}: {src} has no complete {', '.join(missing)}")
    copy_stages(src, folder, keep)


def copy_stages(src: Path, folder: Path, keep) -> None:
    """Make ``folder`` a run whose complete stages are ``keep``, copied from the run folder ``src``."""
    for stage in keep:
        shutil.copytree(src / STAGE_DIRS[stage], folder / STAGE_DIRS[stage], dirs_exist_ok=True)
    m = read_json(src / "run.json")
    m.update(name=folder.name, stages={s: m["stages"][s] for s in keep}, copied_from=str(src))
    atomic_write_json(folder / "run.json", m)  # last: a copy cut short is started again, not read as complete


def run_seed(seed: int, args, params: list[str]) -> dict:
    """Train the missing stages of one seed, each in its own process (``labkit train``), then read it."""
    folder = Path(args.work) / f"seed-{seed}"
    if args.source:
        reuse(args.source, seed, folder)
    stages = PIPELINE[:PIPELINE.index(args.last) + 1]
    env = {**os.environ, "LABKIT_THREADS": str(args.threads)}
    for stage in stages:
        if Run(folder.name, folder.parent).is_complete(stage):
            continue
        cmd = [sys.executable, "-m", "labkit", "train", stage, "--name", folder.name, "--runs-dir", str(folder.parent),
               "--preset", args.preset, "-p", f"seed={seed}", "-p", f"threads={args.threads}"]
        for p in params:  # stage-qualified ones (sft.learning_rate=...) only reach their stage
            name = p.split("=", 1)[0]
            if "." not in name or name.split(".")[0] == stage:
                cmd += ["-p", p.split(".", 1)[1] if "." in name else p]
        log = folder.parent / f"seed-{seed}.{stage}.log"
        folder.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(log, "w") as f:
            done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        print(f"seed {seed}: {stage} {'done' if done.returncode == 0 else 'FAILED'} in {time.time() - t0:.0f}s "
              f"(log {log})", flush=True)
        if done.returncode:
            raise SystemExit(f"seed {seed}: stage {stage} failed; see {log}")
    if wants_twin(args.twin, seed) and not Run(f"{folder.name}-nokl", folder.parent).is_complete("ppo"):
        code = ("import sys; from labkit import ppo; "
                f"ppo.kl_ablation(ppo.config({args.preset!r}, seed={seed}, threads={args.threads}), "
                f"{folder.name!r}, {str(folder.parent)!r}, {args.preset!r}, live=False)")
        with open(folder.parent / f"seed-{seed}.twin.log", "w") as f:
            subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, env=env, check=True)
        print(f"seed {seed}: kl_coef=0 twin done", flush=True)
    return numbers(folder)


def wants_twin(twin: str, seed: int) -> bool:
    """``--twin`` alone: every seed; ``--twin 3,4``: those seeds only (the alarm table is read at the test seeds)."""
    return twin == "all" or (bool(twin) and seed in {int(s) for s in twin.split(",")})


def summary(per_seed: dict) -> dict:
    """mean / min / max of every number over the seeds that have it."""
    out = {}
    for k in next(iter(per_seed.values())):
        vals = [v[k] for v in per_seed.values() if isinstance(v.get(k), (int, float)) and not isinstance(v.get(k), bool)]
        if vals:
            out[k] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def commit() -> str | None:
    """The commit the runs' code is at, with "+changes" when labkit/ differs from it (None outside git)."""
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent.parent)  # noqa: E731
    head = git("rev-parse", "--short", "HEAD")
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if git("diff", "--quiet", "HEAD", "--", "labkit").returncode else "")


def machine() -> dict:
    import torch

    from labkit.models import cpu_id, cpu_model
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"), "cpu_id": cpu_id()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--to", dest="last", default="compare", choices=PIPELINE, help="last stage each seed trains")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per stage (1: two seeds run side by side)")
    ap.add_argument("--jobs", type=int, default=1, help="seeds trained at the same time")
    ap.add_argument("--twin", nargs="?", const="all", default="",
                    help="also train stage 5's kl_coef=0 twin (ppo.kl_ablation): at every seed, or at these (--twin 3,4)")
    ap.add_argument("--work", default="runs/seeds")
    ap.add_argument("--from", dest="source", metavar="WORK:STAGE",
                    help="each seed starts from a copy of WORK/seed-<n>'s stages up to STAGE (the same models)")
    ap.add_argument("-p", "--param", action="append", default=[], help="key=value or stage.key=value, every seed")
    ap.add_argument("--beside", metavar="FILE", help="a benchmarks/results file of the same seeds and settings "
                    "from before a change to the code; docs/results.md sets the two side by side")
    ap.add_argument("--change", help="with --beside: what the code does now that it did not then")
    ap.add_argument("--candidate", action="store_true", help="with --from WORK:STAGE: the -p settings are a "
                    "candidate for the preset, kept when they meet at least as many stage-5 targets as WORK's runs at "
                    "every development seed and more in all (the rule docs/results.md applies)")
    ap.add_argument("--out", default="benchmarks/results/seeds.json")
    args = ap.parse_args()
    if args.candidate and not args.source:
        raise SystemExit("--candidate compares the later stages on the same earlier models: give --from WORK:STAGE")
    if bool(args.beside) != bool(args.change):
        raise SystemExit("--beside and --change go together: the older runs' file, and what changed since")
    if args.beside and not (Path(args.out).parent / args.beside).exists():
        raise SystemExit(f"--beside {args.beside}: no such file in {Path(args.out).parent}")
    seeds = [int(s) for s in args.seeds.split(",")]
    code = commit()  # the code the stages run: a commit made during a long run must not take its name
    with ThreadPoolExecutor(args.jobs) as pool:  # each seed's stages run in child processes
        results = dict(zip(seeds, pool.map(lambda s: run_seed(s, args, args.param), seeds)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "preset": args.preset, "date": time.strftime("%Y-%m-%d"), "params": args.param, "threads": args.threads,
        "last": args.last, "work": args.work, "from": args.source, "commit": code,
        **({"commit_at_end": end} if (end := commit()) != code else {}),
        **({"beside": args.beside, "change": args.change} if args.beside else {}),
        **({"candidate": True} if args.candidate else {}),
        "machine": machine(), "dev_seeds": [s for s in seeds if s in DEV_SEEDS],
        "test_seeds": [s for s in seeds if s in TEST_SEEDS], "seeds": {str(s): results[s] for s in sorted(seeds)},
        "summary": summary(results)}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
