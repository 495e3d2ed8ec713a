"""Is a stage-5 miss the phrasing's? The same held-out requests asked in every template role.

    .venv/bin/python benchmarks/phrasing.py --work runs/seeds --seeds 0,1,2,3,4 --out benchmarks/results/phrasing.json

Stage 5's held-out conduct rates ask each request in evaluation's one template per request shape, which no
stage trains in. This asks the very requests of a seed's stage-5 evaluation (its harmful, unanswerable and
benign prompts: same verb, person, object or sentence) in every template of each role -- SFT's ("train"),
the RLHF stages' ("rl") and evaluation's ("eval") -- and samples the seed's SFT and PPO models on them as
stage 5 does (``eval_samples`` samples at the rollout temperature). A rate that is high in the phrasings a
stage trained in and low in the held-out one is a miss of generalisation to a new phrasing, not of what PPO
taught. The "eval" rate is a fresh draw of the same prompts stage 5 evaluated, so it is near, not equal to,
its eval.json. A diagnosis: nothing is chosen on it. Reads run folders that ``benchmarks/seeds.py`` made.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import commit, machine  # noqa: E402  (the same machine record as the runs it reads)

from labkit import world as W  # noqa: E402
from labkit.config import DEV_SEEDS, set_threads  # noqa: E402
from labkit.generate import conduct_summary, sample_tasks  # noqa: E402
from labkit.ppo_config import PPOConfig, heldout_tasks, load_prompts, stage5_config  # noqa: E402
from labkit.ppo_models import load_policy  # noqa: E402
from labkit.runs import STAGE_DIRS, Run, atomic_write_json, read_json  # noqa: E402
from labkit.tokenizer import ensure_chat_ready  # noqa: E402

ROLES = ("train", "rl", "eval")
RATES = {"harmful": "harmful_refused", "unanswerable": "unanswerable_abstained", "benign": "over_refusal_benign"}


def requests(folder: Path) -> tuple[dict, PPOConfig]:
    """The seed's stage-5 held-out conduct prompts, per family, and the stage's config (as it ran).

    The prompts are drawn again from the world (``ask_in`` needs each task's template, which stage 5's
    samples.jsonl does not keep), and must be the very prompts that file holds."""
    run = Run.at(folder)
    cfg = stage5_config(run)
    _, held_out = load_prompts(cfg, run.world())
    if [t["prompt"] for t in held_out] != [t["prompt"] for t in heldout_tasks(run)]:
        raise SystemExit(f"{folder}: the world's held-out draw is not the one stage 5 evaluated (the world code "
                         "changed since); run stage 5 again")
    return {fam: [t for t in held_out if t["family"] == fam] for fam in RATES}, cfg


def rates(model, tok, tasks: dict, cfg: PPOConfig, seed: int) -> dict:
    """Per family and role: the family's rate (% of samples) with every request asked in each of the role's
    templates, and per template."""
    out = {}
    for fam, todo in tasks.items():
        out[fam] = {}
        for role in ROLES:
            n_templates = len(W.request_templates(todo[0], role))  # the same count for every shape of a role
            asked = [W.ask_in(t, role, i) for i in range(n_templates) for t in todo]
            rows = sample_tasks(model, tok, asked, k=cfg.eval_samples, temperature=cfg.temperature,
                                max_new_tokens=cfg.max_new_tokens, seed=seed)
            # per template, named by its first request's (a person-shaped and an object-shaped one share an index)
            per_template = {asked[i * len(todo)]["template"]: conduct_summary(rows[i * len(todo):(i + 1) * len(todo)])[
                RATES[fam]] for i in range(n_templates)}
            out[fam][role] = {"rate": conduct_summary(rows)[RATES[fam]], "templates": per_template,
                              "requests": len(todo)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/seeds", help="seeds.py's work folder (seed-<n> run folders)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/phrasing.json")
    args = ap.parse_args()
    set_threads(args.threads)  # deliberate: sampling is the whole cost here
    out_path = Path(args.out)
    doc = read_json(out_path, {})
    doc.update(date=datetime.date.today().isoformat(), machine=machine(), commit=commit(), work=args.work,
               command="benchmarks/phrasing.py " + " ".join(sys.argv[1:]), roles=list(ROLES))
    doc.setdefault("seeds", {})
    for s in [int(x) for x in args.seeds.split(",")]:
        folder = Path(args.work) / f"seed-{s}"
        for stage in ("sft", "ppo"):
            if not (folder / STAGE_DIRS[stage] / "model").is_dir():
                raise SystemExit(f"{folder} has no {stage} model: run benchmarks/seeds.py --seeds {s} --to ppo first")
        tasks, cfg = requests(folder)
        entry = {"development": s in DEV_SEEDS, "samples": cfg.eval_samples, "temperature": cfg.temperature,
                 # the phrasings stages 3 and 5 sampled in: a phrasing trained in is not held-out for this run
                 "rollout_templates": {"preferences": read_json(folder / STAGE_DIRS["preferences"] / "config.json")
                                       .get("rollout_templates", "rl"), "ppo": cfg.rollout_templates}}
        ev = read_json(folder / STAGE_DIRS["ppo"] / "eval.json")
        entry["stage5"] = {fam: {"before": ev["before"][RATES[fam]], "after": ev["after"][RATES[fam]]}
                           for fam in RATES}
        for stage in ("sft", "ppo"):
            path = folder / STAGE_DIRS[stage] / "model"
            model, tok = load_policy(path), ensure_chat_ready(AutoTokenizer.from_pretrained(str(path)))  # as stage 5
            entry[stage] = rates(model, tok, tasks, cfg, seed=s)
            print(f"seed {s} {stage}: " + "; ".join(
                f"{fam} " + " / ".join(f"{role} {entry[stage][fam][role]['rate']:.1f}" for role in ROLES)
                for fam in RATES), flush=True)
        doc["seeds"][str(s)] = entry
        atomic_write_json(out_path, doc)  # per seed: an interrupted run keeps the seeds it finished
    print(json.dumps({s: {st: {f: {r: round(v[r]["rate"], 1) for r in ROLES} for f, v in e[st].items()}
                          for st in ("sft", "ppo")} for s, e in doc["seeds"].items()}, indent=1))


if __name__ == "__main__":
    main()
