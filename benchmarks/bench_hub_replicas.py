"""Every endpoint of the app, and every tab example that uses a hub model, at 256 px on replicas of the hub repositories.

    python -m benchmarks.bench_hub_replicas [--dir DIR] [--steps 2] [--only endpoints|examples]

Writes the replicas of google/ddpm-celebahq-256, google/ddpm-cat-256 and openai/clip-vit-base-patch32
(benchmarks/replicas.py: the published files and layout, `.bin` weights only, random weights) to a temporary folder,
or reuses DIR, and then
1. starts `python app.py` in a subprocess with STEER_MODEL_DIR=DIR, STEER_MODEL=google/ddpm-celebahq-256,
   STEER_DEVICE=cpu, HF_HUB_OFFLINE=1 and drives every endpoint through gradio_client at batch 1 with a few sampler
   steps: ILVR; CLIP guidance in both gradient modes with both samplers; CycleDiffusion reconstruct, translate
   celebahq -> cat, text edit and plug-and-play (1 Langevin step); Asyrp with a principal direction, learning one
   (/asyrp_learn, 1 iteration), the learned one and a direction file written by pipelines.asyrp.directions.save_direction;
2. runs every example of every tab that uses a hub model (celebahq, cat or CLIP) through the tab's own function in a
   subprocess per tab, with its steps lowered to --steps, so that an example setting the hub models cannot take
   (a down_factor that does not divide 256, a t_edit out of range, ...) fails loudly.

The app refuses a request its estimate puts over STEER_MAX_SECONDS (300 s by default); the runs here get --max-seconds
(a day) so that every one is measured, and the table marks those that took longer than the app's default.
It prints one row per run: sampler steps (as the tab's progress bar counts them), seconds per step, total seconds and
the peak RSS of the process doing the work during that run (VmHWM of the server, or of the tab's subprocess, reset
before each run through /proc/PID/clear_refs), then the failures with their messages and 'N passed, M failed'.
The random weights make the images noise: this checks that everything runs and what it costs, not what it draws.
If the loader refuses the `.bin` weights (it may accept only safetensors), the failed runs are retried every 120 s
for --wait-minutes while pipelines/ changes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import print_table
from benchmarks.server import Server
from benchmarks.replicas import DDPM_REPOS, replicas_present, write_replicas

ROOT = Path(__file__).resolve().parent.parent
CELEBAHQ, CAT = DDPM_REPOS
HUB_MODELS = set(DDPM_REPOS)
ASTRONAUT = "assets/astronaut.png"
GUIDANCE_MIN_STEPS = 10  # /guidance preprocesses its inputs, so its steps slider's minimum (10) is enforced
ASYRP_STEPS = 3  # DDIM timesteps 666, 333, 0: one step inside celebahq's edit interval t >= 516 (2 steps: 500, 0)
TABS = ("ilvr", "guidance", "cycle", "asyrp")
STEPS_COLUMN = {"ilvr": 4, "guidance": 6, "cycle": 8, "asyrp": 7}  # where each tab's EXAMPLES rows keep the steps
WAIT_S = 120


@dataclass
class Run:
    """One timed run: an endpoint call or a tab example."""

    what: str
    steps: int | None = None
    seconds: float | None = None
    peak_rss_mib: float | None = None
    error: str = ""
    detail: str = ""  # server log or traceback of a failure
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def row(self) -> dict:
        per_step = f"{self.seconds / self.steps:.1f}" if self.ok and self.steps else "-"
        return {
            "run": self.what,
            "steps": self.steps if self.steps is not None else "-",
            "s/step": per_step,
            "total s": f"{self.seconds:.1f}" if self.seconds is not None else "-",
            "peak RSS MiB": f"{self.peak_rss_mib:.0f}" if self.peak_rss_mib is not None else "-",
            "result": "ok" if self.ok else "FAIL",
            "note": self.note,
        }


def loader_refused_bin(run: Run) -> bool:
    """The failure of a loader that still accepts only safetensors (pipelines/loading.py being changed)."""
    text = f"{run.error}\n{run.detail}"
    return "safetensors" in text and ("no file named" in text or "Could not load" in text)


# ---------------------------------------------------------------------------------------------- peak memory


def reset_peak_rss(pid: int | str = "self") -> None:
    """Make VmHWM the current RSS, so that the next reading is the peak of what runs in between (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


def environment(model_dir: Path, max_seconds: float) -> dict[str, str]:
    """The app's environment: the replicas as local copies, celebahq the default, the CPU, no hub, one thread,
    and a request budget (STEER_MAX_SECONDS) that lets every run through, so that all of them are measured."""
    return os.environ | {"STEER_MAX_SECONDS": str(max_seconds),
        "STEER_MODEL_DIR": str(model_dir), "STEER_MODEL": CELEBAHQ, "STEER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


# ---------------------------------------------------------------------------------------------- endpoints


@dataclass
class Call:
    what: str
    api_name: str
    args: list
    steps: int
    expect_images: int | None = None  # gallery length, where there is a gallery
    note: str = ""


def endpoint_calls(steps: int, direction_file: Path) -> list[Call]:
    from gradio_client import handle_file

    from pipelines.asyrp.interval import asyrp_interval
    from ui import asyrp_tab, cycle_tab, guidance_tab

    image = handle_file(str(ROOT / ASTRONAUT))
    calls = [Call("ILVR N=4", "/ilvr", [image, CELEBAHQ, 4, 0, steps, 1, 0, False], steps, 3)]
    g_steps = max(steps, GUIDANCE_MIN_STEPS)
    for gradient in ("exact", "fixed_eps"):
        for sampler in ("ddpm", "ddim"):
            args = [guidance_tab.FACE_PROMPTS, "a photo of a smiling person", CELEBAHQ, 10, sampler, gradient, 0.0,
                    g_steps, 1, 0, False, "0", guidance_tab.CLIP_ZERO_SHOT, False]  # no unguided comparison
            calls.append(Call(f"guidance CLIP {gradient} {sampler}", "/guidance", args, g_steps, 1,
                              f"{g_steps} steps: the endpoint's minimum" if g_steps != steps else ""))
    # image, mode, source, target, target text, source text, strength, eta, steps, s, exact, pnp steps, lambda, seed
    cycle = [
        ("reconstruct", "reconstruct", None, "", 0, 2, 2),
        ("translate celebahq -> cat", "translate", CAT, "", 0, 3, 3),
        ("text edit", "text", None, "a smiling face", 0, 3, 3),
        ("text edit + plug-and-play (1 Langevin step)", "text", None, "a smiling face", 1, 3, 3),
    ]
    assert {row[1] for row in cycle} <= set(cycle_tab.MODES)
    for what, mode, target, prompt, pnp, stages, images in cycle:
        args = [image, mode, CELEBAHQ, target, prompt, "a face" if prompt else "", 1.0, 1.0, steps, 10, False, pnp,
                1e-3, 0, None, None, False]  # no SDEdit baseline: the s/step of the method itself
        calls.append(Call(f"CycleDiffusion {what}", "/cycle", args, stages * steps + pnp, images))
    unsupervised, learned, from_file = asyrp_tab.SOURCES
    t_edit, t_boost = asyrp_interval(CELEBAHQ)
    a = ASYRP_STEPS

    def asyrp(source, file):
        return [image, CELEBAHQ, source, 1, file, 1.0, False, False, t_edit, t_boost, a, 0]

    edit_steps = sum(1 for t in range(0, 1000, 1000 // a) if t >= t_edit)
    calls += [
        Call("Asyrp principal direction k=1", "/asyrp", asyrp(unsupervised, None), 2 * a, 3,
             f"{a} steps (edit interval t >= {t_edit}); + PCA of h over {asyrp_tab.PCA_SAMPLES} samples"),
        Call("Asyrp learn f_t (/asyrp_learn, 1 iteration)", "/asyrp_learn",
             [image, CELEBAHQ, "a face", "a smiling face", "f_t", 1, t_edit, a],
             a + edit_steps, None, f"inversion + {edit_steps} edit step(s) with CLIP backward"),
        Call("Asyrp learned direction", "/asyrp", asyrp(learned, None), 2 * a, 3, "inversion cached"),
        Call("Asyrp direction file", "/asyrp", asyrp(from_file, handle_file(str(direction_file))), 2 * a, 3,
             "inversion cached"),
    ]
    return calls


def write_direction_file(folder: Path) -> Path:
    """A global delta_h for celebahq's h-space (512x8x8), saved by the project's own save_direction."""
    from benchmarks.replicas import UNET_CONFIG
    from pipelines.asyrp.interval import asyrp_interval
    from pipelines.asyrp.directions import save_direction

    side = UNET_CONFIG["sample_size"] // 2 ** (len(UNET_CONFIG["block_out_channels"]) - 1)
    delta_h = torch.randn(UNET_CONFIG["block_out_channels"][-1], side, side, generator=torch.Generator().manual_seed(0))
    return save_direction(folder / "celebahq-random.safetensors", delta_h, model_id=CELEBAHQ,
                          t_edit=asyrp_interval(CELEBAHQ)[0], num_inference_steps=ASYRP_STEPS, source="random",
                          target="random direction", note="bench_hub_replicas")


def gallery_length(result) -> int | None:
    gallery = result[0] if isinstance(result, tuple) else result
    return len(gallery) if isinstance(gallery, list) else None


def run_endpoints(env: dict[str, str], work: Path, steps: int, only: set[str] | None = None) -> tuple[list[Run], str]:
    """Start the app, call every endpoint (those named in `only`, when given); the runs and a line about the server."""
    from gradio_client import Client

    calls = [c for c in endpoint_calls(steps, write_direction_file(work)) if only is None or c.what in only]
    try:
        server = Server(env, work / "server.log", threads=1)
    except RuntimeError as err:
        return [Run(c.what, c.steps, error="the app did not start", detail=str(err)) for c in calls], ""
    runs = []
    try:
        baseline = peak_rss_mib(server.process.pid)
        header = (f"server: pid {server.process.pid}, up in {server.start_seconds:.1f} s, "
                  f"RSS {baseline:.0f} MiB before the first call (no model loaded yet)")
        print(header, flush=True)
        client = Client(server.url, verbose=False)
        for call in calls:
            offset = server.log_offset()
            reset_peak_rss(server.process.pid)
            run = Run(call.what, call.steps, note=call.note)
            started = time.perf_counter()
            try:
                result = client.predict(*call.args, api_name=call.api_name)
                got = gallery_length(result)
                if call.expect_images is not None and got != call.expect_images:
                    run.error = f"returned {got} gallery items, expected {call.expect_images}"
            except Exception as err:  # gradio_client raises AppError for gr.Error and for crashes alike
                run.error = f"{type(err).__name__}: {err}"
                run.detail = server.log_tail(offset)
            run.seconds = time.perf_counter() - started
            run.peak_rss_mib = peak_rss_mib(server.process.pid)
            print(f"  {'ok  ' if run.ok else 'FAIL'} {run.what}: {run.seconds:.1f} s, peak RSS "
                  f"{run.peak_rss_mib:.0f} MiB {run.error}", flush=True)
            runs.append(run)
    finally:
        server.close()
    return runs, header


# ---------------------------------------------------------------------------------------------- examples


def uses_hub_model(tab: str, row: list) -> bool:
    from ui import guidance_tab

    if any(isinstance(value, str) and value in HUB_MODELS for value in row):
        return True
    return (tab == "guidance" and row[0] == guidance_tab.CLIP_ZERO_SHOT) or (tab == "cycle" and row[1] == "text")


def asyrp_steps(model_id: str, steps: int) -> int:
    """The fewest DDIM steps, at least `steps`, that visit the model's edit interval t >= t_edit at least once."""
    from pipelines.asyrp.interval import asyrp_interval

    t_edit = asyrp_interval(model_id)[0]
    while max(range(0, 1000, 1000 // steps)) < t_edit:
        steps += 1
    return steps


class CountingProgress:
    """Stands in for gr.Progress: counts the sampler steps the tab reports."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1


def run_example(tab: str, row: list, steps: int) -> tuple[object, int, int]:
    """Run one example row through its tab function; (result, the steps it ran with, the progress calls)."""
    from pipelines.asyrp.interval import asyrp_interval
    from ui import asyrp_tab, cycle_tab, guidance_tab, ilvr_tab

    row = list(row)
    row[STEPS_COLUMN[tab]] = asyrp_steps(row[1], steps) if tab == "asyrp" else steps
    progress = CountingProgress()
    if tab == "ilvr":
        result = ilvr_tab.run_ilvr(*row, progress=progress)
    elif tab == "guidance":
        kind, model_id, prompts, target, scale, sampler, n, samples, seed, sweep, sweep_scales = row
        result = guidance_tab.run_guidance(prompts, target, model_id, scale, sampler, "fixed_eps", 0.0, n, samples,
                                           seed, sweep, sweep_scales, kind, False, progress=progress)
    elif tab == "cycle":
        image, mode, source, target, target_text, source_text, strength, eta, n, seed, source_class, target_class = row
        result = cycle_tab.run_cycle(image, mode, source, target, target_text, source_text, strength, eta, n, 10, False,
                                     0, 1e-3, seed, source_class, target_class, False, progress=progress)
    else:
        image, model_id, source, k, direction_file, scale, strip, n, seed = row
        t_edit, t_boost = asyrp_interval(model_id)
        result = asyrp_tab.run_asyrp(image, model_id, source, k, None, direction_file, scale, strip, False, t_edit,
                                       t_boost, n, seed, progress=progress)
    return result, row[STEPS_COLUMN[tab]], progress.calls


def expected_images(tab: str, row: list) -> int:
    """The gallery length the tab should return for an example row."""
    from ui import asyrp_tab, guidance_tab

    if tab == "ilvr":
        return 2 + row[5]  # reference, its low-pass, the samples
    if tab == "guidance":
        return (len(guidance_tab.parse_scales(row[10])) if row[9] else 1) * row[7]
    if tab == "cycle":
        return 2 if row[1] == "reconstruct" else 3  # input, reconstruction (, result)
    return 2 + (len(asyrp_tab.STRIP) if row[6] else 1)  # input, scale 0, the edits


def describe(tab: str, row: list) -> str:
    if tab == "ilvr":
        return f"{row[1]} N={row[2]} range_t={row[3]} x{row[5]}"
    if tab == "guidance":
        sweep = f" sweep {row[10]}" if row[9] else ""
        return f"{row[1]} '{row[3]}' {row[5]} s={row[4]}{sweep} x{row[7]}"
    if tab == "cycle":
        return f"{row[1]} {row[2]}" + (f" -> {row[3]}" if row[3] else "") + (f" '{row[4]}'" if row[4] else "")
    return f"{row[1]} {row[2].split(' (')[0]} k={row[3]} s={row[5]}" + (" strip" if row[6] else "")


def examples_worker(tab: str, steps: int) -> None:
    """In a subprocess of its own: every hub example of `tab`, one 'RESULT {json}' line each."""
    import importlib

    torch.set_num_threads(1)
    module = importlib.import_module(f"ui.{tab}_tab")
    for index, row in enumerate(module.EXAMPLES):
        if not uses_hub_model(tab, row):
            continue
        what = f"{tab} example {index}: {describe(tab, row)}"
        reset_peak_rss()
        started = time.perf_counter()
        record = {"what": what}
        try:
            result, ran_steps, progress_calls = run_example(tab, row, steps)
            got, want = gallery_length(result), expected_images(tab, row)
            record |= {"steps": progress_calls, "note": f"steps {row[STEPS_COLUMN[tab]]} -> {ran_steps}"}
            if got != want:
                record["error"] = f"returned {got} gallery items, expected {want}"
        except BaseException as err:  # gr.Error, a crash in the pipeline, an out-of-memory kill's MemoryError
            record |= {"error": f"{type(err).__name__}: {err}", "detail": traceback.format_exc()[-6000:]}
        record |= {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}
        print("RESULT " + json.dumps(record), flush=True)


def run_examples(env: dict[str, str], work: Path, steps: int, tabs=TABS, only: set[str] | None = None) -> list[Run]:
    runs = []
    for tab in tabs:
        log_path = work / f"examples-{tab}.log"
        command = [sys.executable, "-m", "benchmarks.bench_hub_replicas", "--worker", tab, "--steps", str(steps)]
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=log, text=True)
            for line in process.stdout:
                if not line.startswith("RESULT "):
                    continue
                record = json.loads(line.removeprefix("RESULT "))
                run = Run(record["what"], record.get("steps"), record["seconds"], record["peak_rss_mib"],
                          record.get("error", ""), record.get("detail", ""), record.get("note", ""))
                print(f"  {'ok  ' if run.ok else 'FAIL'} {run.what}: {run.seconds:.1f} s, peak RSS "
                      f"{run.peak_rss_mib:.0f} MiB {run.error}", flush=True)
                if only is None or run.what in only:
                    runs.append(run)
            process.wait()
        if process.returncode != 0:
            runs.append(Run(f"{tab} examples (worker)", error=f"the worker exited with {process.returncode}",
                            detail=log_path.read_text(errors="replace")[-6000:]))
    return runs


# ---------------------------------------------------------------------------------------------- main


def git_head() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "log", "--oneline", "-3"], capture_output=True, text=True)
    return out.stdout.strip()


def run_all(env: dict[str, str], work: Path, steps: int, parts: set[str], only: set[str] | None = None,
            tabs=TABS) -> tuple[list[Run], str]:
    runs, header = [], ""
    if "endpoints" in parts:
        print("endpoints through gradio_client:", flush=True)
        endpoint_runs, header = run_endpoints(env, work, steps, only)
        runs += endpoint_runs
    if "examples" in parts:
        print("tab examples that use a hub model, through the tab functions:", flush=True)
        runs += run_examples(env, work, steps, tabs, only)
    return runs, header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="replicas to reuse, or where to write them (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps per run (examples: their steps lowered to this)")
    parser.add_argument("--only", choices=["endpoints", "examples"], help="run only one of the two parts")
    parser.add_argument("--tabs", nargs="+", choices=TABS, default=list(TABS), help="examples of these tabs only")
    parser.add_argument("--wait-minutes", type=float, default=30,
                        help="how long to keep retrying runs that fail because the loader refuses .bin weights")
    parser.add_argument("--max-seconds", type=float, default=86400,
                        help="the app's request budget (STEER_MAX_SECONDS) during the runs; runs that took longer than "
                             "the app's own default are marked in the table")
    parser.add_argument("--worker", choices=TABS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        examples_worker(args.worker, args.steps)
        return

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-hub-replicas-"))
    model_dir = args.dir or work / "models"
    if replicas_present(model_dir):
        print(f"reusing the replicas in {model_dir}")
    else:
        t = time.perf_counter()
        write_replicas(model_dir)
        print(f"wrote the replicas to {model_dir} in {time.perf_counter() - t:.1f} s")
    print(f"git HEAD:\n{git_head()}\nlogs in {work}", flush=True)
    parts = {args.only} if args.only else {"endpoints", "examples"}
    env = environment(model_dir, args.max_seconds)
    runs, header = run_all(env, work, args.steps, parts, tabs=args.tabs)

    deadline = time.monotonic() + 60 * args.wait_minutes
    while any(map(loader_refused_bin, runs)) and time.monotonic() < deadline:
        refused = {r.what for r in runs if loader_refused_bin(r)}
        print(f"{len(refused)} runs failed because the loader refuses .bin weights; retrying in {WAIT_S} s", flush=True)
        time.sleep(WAIT_S)
        print(f"git HEAD:\n{git_head()}", flush=True)
        retry_parts = {p for p in parts if any((p == "endpoints") == (" example " not in w) for w in refused)}
        retry_tabs = [tab for tab in args.tabs if any(w.startswith(f"{tab} example") for w in refused)]
        again, new_header = run_all(env, work, args.steps, retry_parts, refused, retry_tabs)
        header = new_header or header
        by_name = {r.what: r for r in again}
        runs = [by_name.get(r.what, r) for r in runs]

    from ui.common import max_seconds

    budget = max_seconds()  # the app's own limit where STEER_MAX_SECONDS is not set (here it is, for the runs)
    for r in runs:
        if r.seconds is not None and r.seconds > budget:
            r.note = "; ".join(filter(None, [r.note, f"took over the app's {budget:.0f} s budget"]))
    print(f"\n{header}" if header else "")
    print_table([r.row() for r in runs])
    failures = [r for r in runs if not r.ok]
    for r in failures:
        print(f"\nFAILED {r.what}: {r.error}")
        if r.detail:
            print("    " + r.detail.strip().replace("\n", "\n    "))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    print(f"{len(runs) - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
