"""The time budget's estimate of an ILVR request against its measured time, at three batch sizes, in one run.

    python -m benchmarks.bench_budget [--model faces-32] [--steps 50]

The estimate is what the page shows before a run (runners.budget, from the U-Net timed at the request's batch
bracket); the measured time is the run itself (runners.ilvr.run), best of two.
"""

from __future__ import annotations

import argparse
import os

from pipelines.models import loading
from runners import budget, ilvr

from .common import print_table, timed


def estimate(settings: ilvr.Settings, model) -> float:
    """The budget's price of the request at its own batch size (every bracket timed, none skipped)."""
    cost = ilvr.cost(settings)
    return sum(w.evals * budget.seconds_at(cost.model_id, w.batch_size, w.grad, model) for w in cost.work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="faces-32")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    os.environ["STEER_MAX_SECONDS"] = "3600"
    model = loading.load_diffusion(args.model)
    single = estimate(ilvr.Settings(model_id=args.model, steps=args.steps, samples=1), model)
    rows = []
    for samples in (1, 4, 8):
        settings = ilvr.Settings("assets/faces/drawn-face.png", args.model, steps=args.steps, samples=samples)
        measured = timed(lambda: ilvr.run(settings), repeats=2)
        priced = estimate(settings, model)
        rows.append({"batch": samples, "estimate (s)": f"{priced:.2f}", "measured (s)": f"{measured:.2f}",
                     "estimate / measured": f"{priced / measured:.2f}",
                     "batch-1 price x B (s)": f"{samples * single:.2f}"})
    print_table(rows)


if __name__ == "__main__":
    main()
