"""The `ectc` command line. Compiler commands import only the compiler; `run` and the other
runtime commands import torch and friends lazily, inside their handlers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_DIFFERENT = 0, 1, 2


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _report_compile_error(err, path: str, source: str) -> None:
    sys.stderr.write(err.render(source, path) + "\n")
    errors = len(err.errors)
    warnings = len(err.diagnostics) - errors
    sys.stderr.write(f"{path}: {errors} error(s), {warnings} warning(s)\n")


def read_spec(name: str) -> str | None:
    """A spec's text, or None after saying on stderr why it cannot be read (missing, a folder,
    not UTF-8): never a traceback."""
    try:
        return Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        sys.stderr.write(f"{name}: cannot read: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                         f"{exc.start})\n")
    except OSError as exc:
        sys.stderr.write(f"{name}: cannot read: {exc.strerror or exc}\n")
    return None


def compile_spec(name: str):
    """The checked IR of one spec, or None after reporting why it cannot be read or compiled."""
    from .compile import compile_text
    from .errors import CompileError

    source = read_spec(name)
    if source is None:
        return None
    try:
        spec, _ = compile_text(source)
    except CompileError as err:
        _report_compile_error(err, name, source)
        return None
    return spec


def cmd_check(args: argparse.Namespace) -> int:
    from .compile import compile_text
    from .errors import CompileError

    if args.format != "text":
        return _check_machine_readable(args)
    status = EXIT_OK
    for name in args.specs:
        source = read_spec(name)
        if source is None:
            status = EXIT_ERROR
            continue
        try:
            _, warnings = compile_text(source, folder=Path(name).parent)
        except CompileError as err:
            _report_compile_error(err, name, source)
            status = EXIT_ERROR
            continue
        for w in warnings:
            sys.stderr.write(w.render(source, name) + "\n")
        print(f"{name}: ok" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return status


def _check_machine_readable(args: argparse.Namespace) -> int:
    """`check --format json|github`: the same diagnostics and exit status as the text form, as
    one JSON list or one GitHub annotation line each, on stdout."""
    from . import diagformat, jsonio
    from .compile import diagnose

    status, records = EXIT_OK, []
    for name in args.specs:
        source = read_spec(name)
        if source is None:
            status = EXIT_ERROR
            continue
        diagnostics = diagnose(source, folder=Path(name).parent)
        if any(d.severity == "error" for d in diagnostics):
            status = EXIT_ERROR
        if args.format == "json":
            records += [diagformat.as_record(d, name) for d in diagnostics]
        else:
            for d in diagnostics:
                print(diagformat.as_github(d, name))
    if args.format == "json":
        print(jsonio.dumps(records, indent=1))
    return status


def cmd_fmt(args: argparse.Namespace) -> int:
    import difflib

    from .errors import CompileError
    from .fmt import format_spec

    status = EXIT_OK
    for name in args.specs:
        path = Path(name)
        source = read_spec(name)
        if source is None:
            status = EXIT_ERROR
            continue
        try:
            formatted = format_spec(source)
        except CompileError as err:
            _report_compile_error(err, name, source)
            status = EXIT_ERROR
            continue
        if formatted == source:
            continue
        if args.check or args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                source.splitlines(True), formatted.splitlines(True), f"{name}", f"{name} (formatted)"))
            status = max(status, EXIT_DIFFERENT) if status != EXIT_ERROR else status
        else:
            from .build import atomic_write

            atomic_write(path, formatted)
            print(f"formatted {name}")
    return status


def cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildError, build
    from .errors import CompileError

    root = Path.cwd()
    try:
        result = build(root, args.specs, Path(args.out), check_only=args.check)
    except CompileError as err:
        _report_compile_error(err, err.path, err.source)  # type: ignore[attr-defined]
        return EXIT_ERROR
    except BuildError as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_ERROR
    except OSError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    for path, source, w in result.warnings:
        sys.stderr.write(w.render(source, path) + "\n")
    if args.check:
        if result.stale:
            for rel in result.stale:
                sys.stderr.write(f"stale: {args.out}/{rel}\n")
            sys.stderr.write(f"{len(result.stale)} generated file(s) out of date: run `ectc build`\n")
            return EXIT_ERROR
        print(f"{args.out}/ is up to date ({len(result.unchanged)} files)")
        return EXIT_OK
    for rel in result.written:
        print(f"wrote   {args.out}/{rel}")
    for rel in result.removed:
        print(f"removed {args.out}/{rel}")
    print(f"{len(result.written)} written, {len(result.removed)} removed, {len(result.unchanged)} unchanged")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from .errors import did_you_mean
    from .explain import explain

    spec = compile_spec(args.spec)
    if spec is None:
        return EXIT_ERROR
    if args.profile is not None:
        names = sorted({p.name for exp in spec.experiments for p in exp.profiles})
        if args.profile not in names:
            hint = did_you_mean(args.profile, names)
            sys.stderr.write(f"error: --profile {args.profile!r}: {args.spec} has no such profile (it has "
                             f"{', '.join(names)})" + (f"; {hint}" if hint else "") + "\n")
            return EXIT_ERROR
    explain(spec, _console(), profile=args.profile)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if _run_problems(args):
        return EXIT_ERROR
    from .runtime.launch import main as run_main

    return run_main(args)


def cmd_eval(args: argparse.Namespace) -> int:
    if _run_problems(args):
        return EXIT_ERROR
    from .runtime.launch import main_eval

    return main_eval(args)


def _run_problems(args: argparse.Namespace) -> bool:
    """Check every flag of `run` or `eval` before the runtime (torch) is imported or anything
    runs; report each problem on one line and return whether there were any."""
    from .plan.model import PlanError
    from .runflags import (check_eval_flags, check_input_files, check_model_file, check_plan_flags,
                           check_run_flags, read_plan)

    problems = check_run_flags(args, Path.cwd())
    if Path(args.spec).is_file():
        spec = compile_spec(args.spec)
        if spec is None:
            return True
        for exp in spec.experiments:
            try:
                plan = read_plan(Path(args.generated), exp.name)
            except PlanError as exc:
                problems.append(str(exc))
                continue
            if plan is not None:
                problems += check_plan_flags(args, plan)
                problems += check_input_files(plan, Path(args.spec), Path(args.generated).parent,
                                              args.allow_outside_files)
                if args.command == "eval":  # the checkpoint stands in for the profile's model
                    problems += check_eval_flags(args, plan)
                else:
                    problems += check_model_file(plan, args.profile, Path(args.spec), Path(args.generated).parent,
                                                 args.allow_outside_files)
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
    return bool(problems)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ectc",
        description="Compile and run Evaluation-Conditioned Training experiments declared in .ect specs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate specs; report every problem with line, caret and hint")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--format", choices=["text", "json", "github"], default="text",
                   help="text (default), a JSON list of diagnostics, or GitHub Actions annotations")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fmt", help="rewrite specs in canonical layout")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--check", action="store_true", help="exit 2 and show a diff when a spec is not canonical")
    p.add_argument("--diff", action="store_true", help="show the diff instead of rewriting")
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("build", help="compile specs (all of specs/ by default) into generated/")
    p.add_argument("specs", nargs="*", metavar="SPEC")
    p.add_argument("--check", action="store_true", help="exit 1 when generated/ is stale; write nothing")
    p.add_argument("--out", default="generated", help="output folder (default: generated)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("explain", help="the compiled plan in words: arms, stages, labels, configs")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--profile", help="explain this profile (default: the spec's default)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("run", help="run an experiment: data, training per arm and seed, evaluation, report")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--profile", help="profile to run (default: the spec's default)")
    p.add_argument("--run-id", help="run folder name under runs/<experiment>/ (default: the profile name)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--generated", default="generated", help="generated code folder (default: generated)")
    p.add_argument("--seeds", type=int, help="override the profile's number of seeds")
    p.add_argument("--arms", help="comma-separated arms to run (default: all)")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="scale every step count (e.g. 0.01 for a smoke test)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--allow-outside-files", action="store_true",
                   help="let data files and word lists lie outside the project (the folder holding generated/)")
    p.add_argument("--launcher", choices=["none", "accelerate"], default="none")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--executor", choices=["local", "submitit-local", "slurm"], default="local")
    p.add_argument("--partition")
    p.add_argument("--gpus-per-job", type=int, default=1)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="the spec's evaluation (labels, sweep, probes, judges, report) of a model "
                                    "trained elsewhere")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--checkpoint", action="append", required=True, metavar="PATH|HUB-ID",
                   help="a folder saved by save_pretrained, or a hub id; repeat for seeds (the k-th is seed k)")
    p.add_argument("--revision", help="hub branch, tag or commit of a hub id (a commit evaluates offline)")
    p.add_argument("--arm", help="the arm whose labels and conditions it is evaluated under (default: the arm "
                                 "trained with the true label)")
    p.add_argument("--profile", help="profile whose evaluation settings apply (default: the spec's default)")
    p.add_argument("--run-id", help="run folder name under runs/<experiment>/ (default: eval-<checkpoint name>)")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: runs)")
    p.add_argument("--generated", default="generated", help="generated code folder (default: generated)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--allow-outside-files", action="store_true",
                   help="let data files and word lists lie outside the project (the folder holding generated/)")
    p.set_defaults(func=cmd_eval, seeds=None, arms=None, steps_scale=1.0)

    _add_optional_commands(sub)
    _add_editor_commands(parser, sub)
    return parser


class _VersionAction(argparse.Action):
    """`--version`: the version is looked up only when asked for, so `--help` stays as fast."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__

        print(f"ectc {__version__}")
        parser.exit()


def cmd_schema(args: argparse.Namespace) -> int:
    from . import jsonio
    from .settings_doc import json_schema

    print(jsonio.dumps(json_schema(), indent=1))
    return EXIT_OK


def cmd_lsp(args: argparse.Namespace) -> int:
    try:
        from .lsp import serve  # pygls is imported here only: no other command pays for it
    except ImportError as exc:
        sys.stderr.write(f"error: `ectc lsp` needs pygls ({exc}): pip install 'ectc[lsp]'\n")
        return EXIT_ERROR

    serve()
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError:
        sys.stderr.write("error: `ectc completion` needs shtab: pip install 'ectc[lsp]'\n")
        return EXIT_ERROR

    parser = build_parser()
    _complete_spec_files(parser)
    print(shtab.complete(parser, shell=args.shell), end="")
    return EXIT_OK


def _complete_spec_files(parser: argparse.ArgumentParser) -> None:
    """Mark every SPEC argument (of every command) as a file, completed to `.ect` files in zsh."""
    for action in parser._actions:  # argparse keeps its actions only here
        if action.metavar in ("SPEC", "OLD", "NEW"):
            action.complete = {"bash": "_shtab_compgen_files", "zsh": "_files -g '*.ect'"}  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _complete_spec_files(sub)


def _add_editor_commands(parser: argparse.ArgumentParser, sub) -> None:
    """`--version`, and the commands for editors and shells: schema, lsp, completion."""
    parser.add_argument("--version", action=_VersionAction, help="print ectc's version and exit")

    p = sub.add_parser("schema", help="the JSON Schema of profile settings, with each setting's doc")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("lsp", help="the language server (stdio) for editors: diagnostics, hover, completion")
    p.set_defaults(func=cmd_lsp)

    p = sub.add_parser("completion", help="print a shell completion script: eval \"$(ectc completion bash)\"")
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=cmd_completion)


def _add_optional_commands(sub) -> None:
    """Commands whose modules are added alongside (diff, plan, runs, compare)."""
    try:
        from .commands import register  # noqa: PLC0415
    except ImportError:
        return
    register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except ModuleNotFoundError as exc:  # an extra's module met past the up-front checks: one line
        from .extras import missing_module

        problem = missing_module(exc, f"ectc {args.command}")
        if problem is None:
            raise
        sys.stderr.write(f"error: {problem}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
