"""One trained diffusion run under several samplers: sample quality against sampling time, into the results file.

For each setting SAMPLER:STEPS (e.g. ddim:25, dpm-solver:10, ddpm:1000) the run's samples are judged
by the protocol of `genzoo eval --metrics fd,kid,pr,score --sampler SAMPLER --steps STEPS`, on the
whole test split, and a record (with the sampler, its steps, the guidance and the seconds per sample)
is appended to OUT/results.jsonl, where `genzoo bench table OUT/results.jsonl --view sampling` shows it.

--converge A,B adds the step-count check: FD with A steps over FD with B steps of DDIM from the same
starting noise (the same seed draws the same x_T, and DDIM with eta = 0 draws nothing else), for each
seed of --seeds, and their mean ratio, printed and appended to OUT/convergence.jsonl (a
setting of --settings that is also a leg of the check, such as ddim:250 at seed 0, is drawn once).

    OMP_NUM_THREADS=1 python benchmarks/diffusion_samplers.py RUN --data-root ../shared/data --out bench \\
        --settings ddim:10,ddim:25,ddim:50,dpm-solver:10,dpm-solver:20 [--guidance 2] [--converge 25,250]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

from genzoo.bench.records import RESULTS_FILE, append_record, read_results, run_record
from genzoo.bench.tables import render
from genzoo.checkpoint import METRICS_FILE
from genzoo.data.registry import load_split
from genzoo.evaluate.metrics import run_metrics
from genzoo.models.registry import load_run

SAMPLE_METRICS = ["fd", "kid", "pr", "score"]
CONVERGENCE_FILE = "convergence.jsonl"


def parse_settings(text: str) -> list[tuple[str, int | None]]:
    """"ddim:25,ddpm" -> [("ddim", 25), ("ddpm", None)]."""
    settings = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        sampler, _, steps = item.partition(":")
        settings.append((sampler, int(steps) if steps else None))
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN")
    parser.add_argument("--data-root", help="data directory (default: the run's)")
    parser.add_argument("--out", required=True, help="bench directory whose results.jsonl gets the records")
    parser.add_argument("--settings", default="ddim:10,ddim:25,ddim:50,dpm-solver:10,dpm-solver:20")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance weight w (conditional runs)")
    parser.add_argument("--samples", type=int, help="samples per setting (default: the model's eval default)")
    parser.add_argument("--converge", help="A,B: the DDIM step counts of the FD ratio check (e.g. 25,250)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the convergence check")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = load_run(Path(args.run_dir))
    info, split = load_split(config["data"]["name"], "test", args.data_root or config["train"].get("data_root"))
    if args.samples:
        split = split.subset(args.samples)  # the real images match the sample count: FD is biased by N
    # the record's environment is the training's; the seconds per sample are this process's, on these threads
    provenance = {"source": "benchmarks/diffusion_samplers.py", "run_dir": str(Path(args.run_dir).resolve()),
                  "eval_threads": torch.get_num_threads()}
    results = Path(args.out) / RESULTS_FILE
    results.parent.mkdir(parents=True, exist_ok=True)

    @functools.cache  # a setting that is also a leg of the convergence check is drawn once
    def evaluate(sampler: str, steps: int | None, seed: int) -> dict:  # positional: one cache key a setting
        sampling = {"sampler": sampler, "steps": steps, "guidance": args.guidance}
        started = time.perf_counter()
        evaluation = run_metrics(model, split, info, SAMPLE_METRICS, seed=seed, sampling=sampling)
        evaluation.update(seed=seed, eval_seconds=time.perf_counter() - started)
        return evaluation

    for sampler, steps in parse_settings(args.settings):
        evaluation = evaluate(sampler, steps, 0)
        append_record(results, run_record(Path(args.run_dir), evaluation, provenance,
                                          subset=None if not args.samples else split.source,
                                          eval_seconds=evaluation["eval_seconds"]))
        print(f"{sampler} {steps}: FD {evaluation['fd']:.1f}, {evaluation['seconds_per_sample']:.3g} s/sample",
              file=sys.stderr)
    print(render(read_results(results), view="sampling", data=[info.name]))

    if args.converge:
        few, many = (int(s) for s in args.converge.split(","))
        fds = {}  # seed -> (FD with few steps, FD with many)
        for seed in (int(s) for s in args.seeds.split(",")):
            fds[seed] = tuple(evaluate("ddim", steps, seed)["fd"] for steps in (few, many))
            print(f"seed {seed}: FD(DDIM-{few}) {fds[seed][0]:.2f} / FD(DDIM-{many}) {fds[seed][1]:.2f} "
                  f"= {fds[seed][0] / fds[seed][1]:.3f}")
        ratios = [fd_few / fd_many for fd_few, fd_many in fds.values()]
        trained = Path(args.run_dir) / METRICS_FILE
        summary = {"few": few, "many": many, "seeds": list(fds), "fd_few": [f[0] for f in fds.values()],
                   "fd_many": [f[1] for f in fds.values()], "ratios": ratios, "mean_ratio": sum(ratios) / len(ratios),
                   "samples": len(split), "guidance": args.guidance, "run_dir": provenance["run_dir"],
                   "recipe": json.loads(trained.read_text()).get("recipe", {}).get("name") if trained.exists() else None}
        with open(Path(args.out) / CONVERGENCE_FILE, "a") as f:
            f.write(json.dumps(summary) + "\n")
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
