"""A lecture: a class of N students press Run at once, each on one of the tabs' first bundled examples, against the app
served at concurrency 1, 2 and 4 (STEER_GPU_CONCURRENCY). Prints, per concurrency, the requests per minute and each
student's wait from pressing Run to the result (p50, p95).

    python -m benchmarks.bench_lecture [--students 15] [--concurrency 1,2,4]

Each level starts `python app.py` afresh (the bundled models, offline, on this machine's device), runs each example
once to load and time its model, then sends the N requests at the same moment over raw HTTP, each a new visitor.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table
from benchmarks.server import ROOT, Server

TABS = ("ilvr", "guidance", "cycle", "cycle_text", "asyrp")  # the endpoints, named as the tabs' runners
BUNDLED = ("faces-32", "shapes-16", "faces-text-32")


def lecture_examples() -> list[tuple[str, dict]]:
    """(endpoint, settings) of each tab's first example on a bundled model, as the tab's Examples set them."""
    from ui import asyrp_tab, cycle_tab, cycle_text, guidance_tab, ilvr_tab

    found = []
    for tab, module in zip(TABS, (ilvr_tab, guidance_tab, cycle_tab, cycle_text, asyrp_tab)):
        rows = [dict(zip(module.EXAMPLE_FIELDS, row)) for row in module.EXAMPLES]
        found.append((tab, next(row for row in rows if row.get("model_id", row.get("source_id")) in BUNDLED)))
    return found


def request(server: Server, parameters: dict, endpoint: str, settings: dict) -> tuple[float, str]:
    """One student's Run: the example's pictures and files uploaded, every setting posted; (seconds, outcome)."""
    start = time.perf_counter()
    values = {name: server.upload(ROOT / value) if isinstance(value, str) and (ROOT / value).is_file()
              and value.startswith("assets/") else value for name, value in settings.items()}
    data = [values.get(name, default) for name, default in parameters[endpoint]]
    outcome, _ = server.call(endpoint, data)
    return time.perf_counter() - start, outcome


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def lecture(concurrency: int, students: int, work: Path) -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
                        "STEER_GPU_CONCURRENCY": str(concurrency), "STEER_QUEUE_SIZE": str(max(32, students))}
    server = Server(env, work / f"server-{concurrency}.log")
    try:
        parameters, examples = server.parameters(), lecture_examples()
        for endpoint, settings in examples:  # each model loaded and timed before the class arrives
            request(server, parameters, endpoint, settings)
        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=students) as pool:
            runs = list(pool.map(lambda i: request(server, parameters, *examples[i % len(examples)]), range(students)))
        makespan = time.perf_counter() - began
    finally:
        server.close()
    waits = [seconds for seconds, outcome in runs if outcome == "complete"]
    return {"concurrency": concurrency, "students": students, "failed": students - len(waits),
            "all done (s)": round(makespan, 1), "requests / min": round(60 * len(waits) / makespan, 1),
            "p50 wait (s)": round(statistics.median(waits), 1), "p95 wait (s)": round(percentile(waits, 0.95), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=15)
    parser.add_argument("--concurrency", default="1,2,4")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lecture-"))
    rows = [lecture(int(c), args.students, work) for c in args.concurrency.split(",")]
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"A class of {args.students} students, each Run at once on one of {', '.join(TABS)}'s first bundled "
          f"example ({device}):")
    print_table(rows)


if __name__ == "__main__":
    main()
