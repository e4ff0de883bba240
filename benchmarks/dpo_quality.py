"""The DPO quality check a user would run: does `moai dpo` after the quickstart's SFT make the
model prefer the right finance answer on preference pairs it never trained on?

    OMP_NUM_THREADS=2 python benchmarks/dpo_quality.py [--quickstart moai-quickstart] [--steps 23]

1. The quickstart's SFT model (`moai quickstart --output-dir QS`, 500 + 250 steps; run here
   when QS/sft/final_model is missing, ~12 min on 2 cores).
2. The embedded finance preference pairs: 508 train pairs (`python -m moai_llm.corpora.split`)
   and the 56 held-out ones (`python -m moai_llm.eval.heldout`); a held-out pair's two answers
   were never trained on, by SFT or by DPO (moai_llm/corpora/preference_set.py).
3. `moai dpo` from QS/sft on the train pairs (sigmoid, beta 0.1, 4 rows of 1024 tokens a step:
   23 steps = one pass over the 508 pairs), then `moai eval --pairs` of SFT and DPO.

Two rewards per answer, both reported: DPO's implicit reward beta * (log pi - log pi_SFT)
(`moai eval DPO --pairs F --reference QS/sft`; TRL's eval rewards/accuracies; the SFT model's
own is 0 for every answer, so its accuracy is chance, 0.5) and the mean log-prob per answer
token (`moai eval MODEL --pairs F`, comparable between any models). Split by how the wrong answer
was made: `perturbed` (the worked answer with a wrong result) and `other_answer` (another held-out
question's answer). Everything is written under --workdir (a new folder; default: a temp folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _moai(*args: str) -> None:
    cmd = ["moai", *args]
    print("$ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")


def _pairs_record(model_dir: Path, since: float) -> dict:
    """The "pairs" entry of the newest evaluation record `moai eval` wrote into the run's eval/."""
    records = sorted((p for p in (model_dir / "eval").glob("*.json") if p.stat().st_mtime >= since),
                     key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text())["pairs"]


def _evaluate(model_dir: Path, pairs: Path, reference: Path | None = None) -> dict:
    since = time.time() - 1
    _moai("eval", str(model_dir), "--pairs", str(pairs), *(["--reference", str(reference)] if reference else []))
    return _pairs_record(model_dir, since)


def _by_kind(sft: Path, dpo: Path, workdir: Path, beta: float) -> dict[str, dict[str, float]]:
    """Accuracy and margin per kind of wrong answer, under both rewards."""
    import torch

    from moai_llm import corpora
    from moai_llm.alignment.reference import score_prepared
    from moai_llm.eval.pair_accuracy import prepare_pairs
    from moai_llm.inference.loading import load_for_chat, resolve_model_dir

    held = corpora.finance_pairs("heldout")
    file = workdir / "heldout_pairs_with_kind.jsonl"
    file.write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}, ensure_ascii=False) + "\n"
                            for p in held))
    scored = {}
    for name, run in (("sft", sft), ("dpo", dpo)):
        model, _, _ = load_for_chat(str(run), device="cpu")
        prepared = prepare_pairs(str(file), resolve_model_dir(str(run))[0], 1024, workdir / f"kind-{name}")
        scored[name] = score_prepared(model, prepared, batch_rows=4)
        del model
    s, d = scored["sft"], scored["dpo"]
    out = {}
    for kind in ("perturbed", "other_answer"):
        idx = torch.tensor([i for i, p in enumerate(held) if p["rejected_from"] == kind])
        implicit = beta * ((d.chosen - s.chosen) - (d.rejected - s.rejected))[idx]
        row = {"pairs": len(idx), "implicit_accuracy": float((implicit > 0).float().mean()),
               "implicit_margin": float(implicit.mean())}
        for name, x in scored.items():
            per_token = (x.chosen / x.chosen_tokens - x.rejected / x.rejected_tokens)[idx]
            row[f"{name}_accuracy"] = float((per_token > 0).float().mean())
            row[f"{name}_margin"] = float(per_token.mean())
        out[kind] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quickstart", default="moai-quickstart", help="quickstart folder (made when missing)")
    parser.add_argument("--workdir", help="a new folder for the pairs, the DPO run and the records")
    parser.add_argument("--steps", type=int, default=23, help="DPO steps (23 = one pass over the train pairs)")
    parser.add_argument("--learning-rate", default="1e-4")
    parser.add_argument("--beta", type=float, default=0.1)
    args = parser.parse_args()
    qs = Path(args.quickstart)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dpo-quality-"))
    if args.workdir:
        workdir.mkdir(parents=True)  # a folder this script makes, never one that holds anything
    started = time.perf_counter()
    if not (qs / "sft" / "final_model").is_dir():
        _moai("quickstart", "--output-dir", str(qs))
    for module, out in (("moai_llm.corpora.split", "corpora"), ("moai_llm.eval.heldout", "evalsets")):
        subprocess.run([sys.executable, "-m", module, str(workdir / out)], check=True, capture_output=True)
    train, held = workdir / "corpora" / "finance_pairs.jsonl", workdir / "evalsets" / "finance_pairs.jsonl"
    sft, dpo = qs / "sft", workdir / "dpo"
    before = _evaluate(sft, held)
    _moai("dpo", "--pretrained-model", str(sft / "final_model"), "--dataset", str(train), "--output-dir", str(dpo),
          "--max-steps", str(args.steps), "--batch-size", "4", "--gradient-accumulation-steps", "1",
          "--learning-rate", args.learning_rate, "--beta", str(args.beta),
          "--eval-pairs", str(held), "--eval-steps", str(args.steps))
    after = _evaluate(dpo, held)
    implicit = _evaluate(dpo, held, reference=sft)
    kinds = _by_kind(sft, dpo, workdir, args.beta)
    last = [json.loads(x) for x in (dpo / "metrics.jsonl").read_text().splitlines() if '"loss"' in x][-1]

    print(f"\nheld-out pairs: {before['pairs']} ({held}); DPO: {args.steps} steps, lr {args.learning_rate}, "
          f"beta {args.beta}; {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f}\n")
    print("| held-out pairs | reward | SFT | after DPO |")
    print("|---|---|---:|---:|")
    print(f"| all {before['pairs']} | implicit, accuracy | 0.5 (chance: every reward 0) | {implicit['accuracy']:.3f} |")
    print(f"| all {before['pairs']} | implicit, margin | 0 | {implicit['margin']:+.3f} |")
    print(f"| all {before['pairs']} | mean log-prob per token, accuracy | {before['accuracy']:.3f} | {after['accuracy']:.3f} |")
    print(f"| all {before['pairs']} | mean log-prob per token, margin | {before['margin']:+.3f} | {after['margin']:+.3f} |")
    for kind, row in kinds.items():
        print(f"| {kind} {row['pairs']} | implicit, accuracy / margin | 0.5 / 0 | "
              f"{row['implicit_accuracy']:.3f} / {row['implicit_margin']:+.3f} |")
        print(f"| {kind} {row['pairs']} | mean log-prob per token, accuracy / margin | "
              f"{row['sft_accuracy']:.3f} / {row['sft_margin']:+.3f} | {row['dpo_accuracy']:.3f} / {row['dpo_margin']:+.3f} |")
    print(f"\ntrain pairs at the last step: rewards/accuracies {last.get('rewards/accuracies')}, "
          f"rewards/margins {last.get('rewards/margins')}, loss {last['loss']}")
    print(json.dumps({"before": before, "after": after, "implicit": implicit, "kinds": kinds, "train_last": last}))


if __name__ == "__main__":
    main()
