"""Audit and reuse commands: `ectc diff`, `ectc plan`, `ectc runs`, `ectc compare`.

Registered by `ectc/cli.py` when this module exists. None of them imports torch.
"""

from __future__ import annotations

import argparse
import sys

from . import jsonio

EXIT_OK, EXIT_ERROR, EXIT_DIFFERENT = 0, 1, 2


def cmd_diff(args: argparse.Namespace) -> int:
    from .diff import SideError, diff_sources, read_side, render_md, render_text, split_ref
    from .errors import CompileError

    if args.new is None:
        path, ref = split_ref(args.old)
        old_arg, new_arg = (f"{path}@HEAD", path) if ref is None else (args.old, path)
    else:
        old_arg, new_arg = args.old, args.new
    try:
        old_src, new_src = read_side(old_arg), read_side(new_arg)
    except SideError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    try:
        res = diff_sources(old_src, new_src, old_arg, new_arg)
    except CompileError:
        sys.stderr.write("error: a side does not parse\n")
        for src, label in ((old_src, old_arg), (new_src, new_arg)):
            try:
                from .lower import lower
                from .parse import parse

                lower(parse(src))
            except CompileError as e:
                sys.stderr.write(e.render(src, label) + "\n")
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(jsonio.dumps(res.to_json(), indent=1) + "\n")
    elif args.md:
        sys.stdout.write(render_md(res))
    elif not _may_be_terminal():
        sys.stdout.write(render_text(res))
    else:
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=True)
        if console.is_terminal:
            from rich.markup import escape

            text = render_text(res, color=False)
            for line in text.splitlines():
                style = {"+": "green", "-": "red", "~": "yellow"}.get(line.strip()[:1]) if line.startswith("  ") and not line.startswith("      ") else None
                if line.startswith("warning:"):
                    style = "bold red"
                console.print(escape(line), style=style)
        else:
            sys.stdout.write(render_text(res))
    for e in res.errors:
        sys.stderr.write(e + "\n")
    if res.errors:
        return EXIT_ERROR
    return EXIT_OK if res.equal else EXIT_DIFFERENT


def _may_be_terminal() -> bool:
    """Whether rich could take stdout for a terminal (a tty, or forced by its environment
    variables): otherwise plain text is written without importing rich (~15 ms of a cold diff)."""
    import os

    if os.environ.get("TTY_COMPATIBLE") or os.environ.get("FORCE_COLOR") is not None:
        return True
    try:
        return sys.stdout.isatty()
    except ValueError:  # closed
        return False


def cmd_plan(args: argparse.Namespace) -> int:
    from .runs import main_plan

    return main_plan(args)


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import main_runs

    return main_runs(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from .runs import main_compare

    return main_compare(args)


def register(sub) -> None:
    p = sub.add_parser("diff", help="semantic diff of two specs and what each change forces to re-run")
    p.add_argument("old", metavar="OLD", help="a spec file or path@gitref (alone: its HEAD version vs the working tree)")
    p.add_argument("new", metavar="NEW", nargs="?", help="a spec file or path@gitref")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--md", action="store_true", help="Markdown, for a pull-request comment")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("plan", help="which stages of a run are cached and which must run, and why")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--profile", help="profile (default: the spec's default)")
    p.add_argument("--run-id", help="run folder name under runs/<experiment>/ (default: the profile name)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--seeds", type=int, help="as for `ectc run`")
    p.add_argument("--arms", help="as for `ectc run`")
    p.add_argument("--steps-scale", type=float, default=1.0, help="as for `ectc run`")
    p.add_argument("--generated", default="generated", help="generated code folder, checked for staleness")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-bill", dest="bill", action="store_false",
                   help="skip the bill (the work, Claude calls, tokens, cost and time of the stages that run)")
    p.add_argument("--calibrate", action="store_true",
                   help="time a short run on this machine first (one arm, ~10 steps, 8 items) for the bill's time")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("runs", help="list runs: spec hash, profile, date, headline metrics")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="metric differences between two runs, and the diff of their specs")
    p.add_argument("run_a", metavar="RUN_A", help="a run folder (or <experiment>/<run-id> under --runs-dir)")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)
