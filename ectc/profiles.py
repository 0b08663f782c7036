"""profiles: a profile that starts from another and overrides what it sets.

`profile mine extends tiny { ... }` starts from the experiment's profile `tiny`;
`profile mine from "ectc:sycophancy/tiny" { ... }` from the profile `tiny` of the shipped spec
`specs/sycophancy.ect` (the library: the specs ectc ships, each profile tuned for its model).
`resolve` runs between lower and check and gives every such profile the settings it ends up
with, so check, generate, explain and diff see one plain profile:

- a setting the profile writes replaces the base's setting of that key, except that a block
  the base also has (`rl { ... }`, `warmup { ... }`) is merged key by key: `rl { steps 40 }`
  changes the steps and keeps the rest; a block inside one (`mix { ... }`, `lr_scheduler_kwargs`)
  is replaced whole, so a warm-up mix names exactly the data it lists;
- a `model` of the base's kind (and file) merges its settings the same way; another kind
  replaces it;
- `(default)` is the profile's own, never inherited.

What a shipped profile brings is pointed at by its `from "..."` string, so a problem in it
(e.g. a warm-up mix naming a data block this experiment lacks) is shown in the spec at hand.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

from . import ir
from .errors import CompileError, Diagnostic, Span, did_you_mean

LIBRARY_PREFIX = "ectc:"
# The shipped specs: the checkout's (or editable install's) specs/ folder beside the package.
LIBRARY_DIR = Path(__file__).resolve().parent.parent / "specs"


def resolve(spec: ir.Spec) -> tuple[ir.Spec, list[Diagnostic]]:
    """The spec with every profile's base merged in, and a diagnostic for each base that
    cannot be had (an unknown profile or library entry, a cycle); such a profile stays as written."""
    out: list[Diagnostic] = []
    experiments = tuple(_resolve_experiment(exp, out) for exp in spec.experiments)
    return dataclasses.replace(spec, experiments=experiments), out


def _resolve_experiment(exp: ir.Experiment, out: list[Diagnostic]) -> ir.Experiment:
    if not any(p.extends or p.library for p in exp.profiles):
        return exp
    by_name = {p.name: p for p in exp.profiles}  # a repeated name is check's E101
    done: dict[str, ir.Profile] = {}

    def resolved(p: ir.Profile, chain: tuple[str, ...]) -> ir.Profile:
        if p.name in done:
            return done[p.name]
        result = p
        if p.extends is not None:
            target = p.extends.id
            if target in chain or target == p.name:
                cycle = " -> ".join((*chain[chain.index(target):], p.name, target) if target in chain
                                    else (p.name, target))
                out.append(Diagnostic(p.extends.span, "E641", f"profile `{p.name}` extends itself: {cycle}",
                                      "a profile starts from one that does not start from it"))
            elif target not in by_name:
                out.append(Diagnostic(p.extends.span, "E640", f"profile `{p.name}` extends an unknown profile `{target}`",
                                      did_you_mean(target, [n for n in by_name if n != p.name])
                                      or _known("profiles here", [n for n in by_name if n != p.name])))
            else:
                result = merge(resolved(by_name[target], (*chain, p.name)), p)
        elif p.library is not None:
            base, problem = library_profile(p.library.value)
            if problem is not None:
                out.append(Diagnostic(p.library.span, "E642", problem[0], problem[1]))
            else:
                result = merge(respan(base, p.library.span), p)
        done[p.name] = result
        return result

    return dataclasses.replace(exp, profiles=tuple(resolved(p, ()) for p in exp.profiles))


def _known(what: str, names: list[str]) -> str:
    return f"{what}: {', '.join(f'`{n}`' for n in sorted(names))}" if names else f"there are no other {what}"


def merge(base: ir.Profile, own: ir.Profile) -> ir.Profile:
    """`own` started from `base` (both resolved as far as they go): see the module's rules."""
    models = base.models
    if own.models:
        models = tuple(_merge_model(base.models[0], m) if base.models else m for m in own.models)
    return dataclasses.replace(own, models=models, settings=_merge_settings(base.settings, own.settings, depth=1))


def _merge_model(base: ir.Model, own: ir.Model) -> ir.Model:
    if (base.type, base.path, base.package) != (own.type, own.path, own.package):
        return own
    return dataclasses.replace(own, settings=_merge_settings(base.settings, own.settings, depth=0))


def _merge_settings(base: tuple[ir.Setting, ...], own: tuple[ir.Setting, ...], depth: int) -> tuple[ir.Setting, ...]:
    """Settings by key, the base's order first: `own` replaces a key, or, `depth` levels down
    from here, merges a block with the base's block of that key."""
    merged: dict[str, ir.Setting] = {s.key: s for s in base}
    for s in own:
        old = merged.get(s.key)
        if depth > 0 and old is not None and old.block is not None and s.block is not None:
            s = dataclasses.replace(s, block=_merge_settings(old.block, s.block, depth - 1))
        merged[s.key] = s
    return tuple(merged.values())


def respan(node, span: Span):
    """`node` with every span in it (spans of any nested node) set to `span`."""
    return ir.from_data(type(node), _respan_data(ir.to_data(node), ir.to_data(span)))


def _respan_data(data, span_data):
    if isinstance(data, dict):
        return {k: span_data if k in ("span", "type_span") else _respan_data(v, span_data) for k, v in data.items()}
    if isinstance(data, list):
        return [_respan_data(v, span_data) for v in data]
    return data


def library_names() -> list[str]:
    """Every shipped profile, as `from` names it."""
    names = []
    for path in sorted(LIBRARY_DIR.glob("*.ect")):
        spec = _library_spec(path.stem)
        if spec is not None:
            names += [f"{LIBRARY_PREFIX}{path.stem}/{p.name}" for exp in spec.experiments for p in exp.profiles]
    return names


def library_profile(name: str) -> tuple[Optional[ir.Profile], Optional[tuple[str, str]]]:
    """(the shipped profile `name` resolved, None) or (None, (message, hint))."""
    listing = f"the shipped profiles are {', '.join(f'`{n}`' for n in library_names())}"
    if not name.startswith(LIBRARY_PREFIX) or "/" not in name:
        return None, (f"`{name}` does not name a shipped profile", f'write `from "{LIBRARY_PREFIX}SPEC/PROFILE"`: {listing}')
    spec_name, profile = name[len(LIBRARY_PREFIX):].split("/", 1)
    spec = _library_spec(spec_name)
    found = [p for exp in (spec.experiments if spec else ()) for p in exp.profiles if p.name == profile]
    if not found:
        return None, (f"no shipped profile `{name}`", did_you_mean(name, library_names()) or listing)
    return found[0], None


@functools.lru_cache(maxsize=16)
def _library_spec(stem: str) -> Optional[ir.Spec]:
    """A shipped spec, lowered, its own profiles resolved (None when there is none by that name).
    Only names of letters, digits, `_` and `-` are looked up: a name never leaves the folder."""
    from .lower import lower
    from .parse import parse

    path = LIBRARY_DIR / f"{stem}.ect"
    if not stem.replace("_", "").replace("-", "").isalnum() or not path.is_file() or stem in _LOADING:
        return None  # (a shipped spec whose profiles start from its own: a cycle, not a spec)
    _LOADING.add(stem)
    try:
        spec, problems = resolve(lower(parse(path.read_text(encoding="utf-8"))))
    except CompileError:
        return None
    finally:
        _LOADING.discard(stem)
    return None if problems else spec


_LOADING: set[str] = set()  # the shipped specs being resolved right now
