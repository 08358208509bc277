"""Memory over many visitors: the app served by `python app.py`, sent N requests one after another (ILVR, Asyrp and a
text edit in turn, on the bundled models, a few sampler steps each), every one from a new visitor (a new session), as
raw HTTP. Prints the server's resident memory every K requests, and its growth after the warm-up.

    python -m benchmarks.bench_soak [--requests 1000] [--every 100] [--warmup 150] [--sessions N]

--sessions sets STEER_SESSIONS, the visitors whose page state Gradio keeps (the app's default unless given; Gradio's
own default is 10,000). The warm-up fills that many sessions and loads the models; the goal is flat memory after it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table
from benchmarks.server import ROOT, Server

FROWNING = "a frowning face with brown hair and pale skin on a green background"
SMILING = "a smiling face with brown hair and pale skin on a green background"


def requests(server: Server) -> list[tuple[str, dict]]:
    """The three requests the soak cycles through, their pictures uploaded once."""
    face = server.upload(ROOT / "assets/faces/frowning.png")
    smile = server.upload(ROOT / "assets/faces-32/directions/smile.safetensors")
    return [("ilvr", dict(reference=face, model_id="faces-32", steps=10, samples=1)),
            ("asyrp", dict(image=face, model_id="faces-32", source="file", file_path=smile, strip=False,
                           t_edit=250, t_boost=0, steps=10)),
            ("cycle_text", dict(image=face, model_id="faces-text-32", source_prompt=FROWNING, prompt=SMILING,
                                steps=10, control="replace"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--sessions", type=int, default=None)
    args = parser.parse_args()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    if args.sessions is not None:
        env["STEER_SESSIONS"] = str(args.sessions)
    server = Server(env, Path(tempfile.mkdtemp(prefix="soak-")) / "server.log")
    rows, failed, began = [], 0, time.perf_counter()
    try:
        parameters, cycle = server.parameters(), requests(server)
        for i in range(args.warmup):
            endpoint, values = cycle[i % len(cycle)]
            failed += server.call(endpoint, [values.get(n, d) for n, d in parameters[endpoint]])[0] != "complete"
        base = server.rss_mib()
        rows.append({"requests after the warm-up": 0, "RSS (MiB)": round(base), "growth (MiB)": 0, "failed": failed})
        for i in range(1, args.requests + 1):
            endpoint, values = cycle[i % len(cycle)]
            failed += server.call(endpoint, [values.get(n, d) for n, d in parameters[endpoint]])[0] != "complete"
            if i % args.every == 0:
                rss = server.rss_mib()
                rows.append({"requests after the warm-up": i, "RSS (MiB)": round(rss),
                             "growth (MiB)": round(rss - base, 1), "failed": failed})
                print(rows[-1], flush=True)
    finally:
        server.close()
    sessions = args.sessions if args.sessions is not None else "the app's default"
    print(f"{args.warmup} requests of warm-up, then {args.requests}, each a new visitor (ILVR, Asyrp, text edit in "
          f"turn; sessions kept: {sessions}), {time.perf_counter() - began:.0f} s:")
    print_table(rows)


if __name__ == "__main__":
    main()
