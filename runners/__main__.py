"""The methods from the command line.

    python -m runners --help
    python -m runners run ilvr --reference assets/faces/drawn-face.png --model faces-32 --out out/
    python -m runners reproduce ilvr-settings.json --out out/
    python -m runners compare --goal smile --faces 32 --out out/

`reproduce` runs a settings file that a tab's result downloaded; on the same device it gives the page's images bit
for bit. Every output image is written as its own PNG at the model's resolution, with the strip beside them.
`compare` measures every method on held-out faces (the Compare tab's "Measure on N faces") and writes the table as
Markdown and CSV and the figure of every face as a PNG.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import tempfile
from dataclasses import MISSING, fields
from pathlib import Path

from . import METHODS, compare, settings_file
from .common import Gallery

MODEL_FIELDS = ("model_id", "source_id")  # --model names the model a method samples or encodes with


def option_type(default):
    if isinstance(default, bool):
        return {"action": argparse.BooleanOptionalAction}
    if isinstance(default, (int, float)):
        return {"type": type(default)}
    return {"type": str}


def add_settings(parser: argparse.ArgumentParser, settings_class) -> None:
    """One option per setting, named after it (--down-factor), its default the dataclass's."""
    for f in fields(settings_class):
        flags = [f"--{f.name.replace('_', '-')}"] + (["--model"] if f.name in MODEL_FIELDS else [])
        default = None if f.default is MISSING else f.default
        parser.add_argument(*flags, dest=f.name, default=None, help=f"default: {default}", **option_type(default))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m runners", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="methods: " + ", ".join(METHODS))
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one method with the settings given as options")
    methods = run.add_subparsers(dest="method", required=True)
    for name, runner in METHODS.items():
        method = methods.add_parser(name, help=(runner.__doc__ or "").splitlines()[0])
        add_settings(method, runner.Settings)
        method.add_argument("--out", type=Path, required=True, help="folder for the output PNGs")
    again = commands.add_parser("reproduce", help="run a settings file that a tab's result downloaded")
    again.add_argument("settings", type=Path, help="<tab>-settings.json")
    again.add_argument("--out", type=Path, required=True, help="folder for the output PNGs")
    measure = commands.add_parser("compare", help="every method on held-out faces: the table and the figure")
    add_settings(measure, compare.MeasureSettings)
    measure.add_argument("--out", type=Path, required=True, help="folder for compare-<goal>.md, .csv and .png")
    return top


def slug(caption: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", caption).strip("-")[:60] or "image"


def save(tab: str, gallery: Gallery, out: Path) -> list[Path]:
    """Every image of a result as its own PNG (numbered, named after its caption), and the strip of them all."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, caption) in enumerate(gallery):
        paths.append(out / f"{i:02d}-{slug(caption)}.png")
        image.save(paths[-1])
    settings_file.strip([image for image, _ in gallery]).save(out / f"{tab}-result.png")
    return paths


def report(done: int, total: int, desc: str, preview) -> None:
    print(f"\r{desc}: step {done} of {total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def write_measured(measured: compare.Measured, goal: str, command: str, out: Path) -> list[Path]:
    """compare-<goal>.md (the table, the command that made it), .csv (the table) and .png (every face)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"compare-{goal}"
    columns = list(measured.table[0])
    lines = [f"`{command}`: {measured.faces} held-out faces, rates with their 95% interval (Wilson)", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in measured.table]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(measured.table)
    written = [stem.with_suffix(".md"), stem.with_suffix(".csv")]
    if measured.figure is not None:
        measured.figure.save(stem.with_suffix(".png"))
        written.append(stem.with_suffix(".png"))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "compare":
        given = {f.name: getattr(args, f.name) for f in fields(compare.MeasureSettings)
                 if getattr(args, f.name) is not None}
        settings = compare.MeasureSettings(**given)
        try:
            measured = compare.measure(settings, callback=report)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from err
        command = "python -m runners " + " ".join(argv if argv is not None else sys.argv[1:])
        for path in write_measured(measured, settings.goal, command, args.out):
            print(path)
        return 0
    if args.command == "reproduce":
        found = settings_file.read_document(args.settings)
        if found["tab"] not in METHODS:
            raise SystemExit(f"{args.settings}: unknown tab {found['tab']!r}; this Space has {', '.join(METHODS)}.")
        runner = METHODS[found["tab"]]
        settings = runner.Settings(**settings_file.values(runner, found, Path(tempfile.mkdtemp())))
    else:
        runner = METHODS[args.method]
        given = {f.name: getattr(args, f.name) for f in fields(runner.Settings) if getattr(args, f.name) is not None}
        settings = runner.Settings(**given)
    try:
        result = runner.run(settings, callback=report)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    for path in save(runner.TAB, result.gallery, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
