"""`ectc diff OLD NEW`: what changed between two specs, semantically, and what each change costs.

The diff compares the checked IR with every source span removed, so reformatting and comments
are not changes. Each changed item gets its consequence for a run, computed rather than guessed:
the change alone is applied to OLD's IR (a "hybrid" spec), both are generated in memory, and the
stage keys the runtime would compute (`ectc/plan/stages.py`) are compared. So `ectc diff` and what a
re-run really does agree by construction. No torch is imported.

    diff_sources(old_src, new_src) -> DiffResult   # the API; cli: `ectc diff`, see commands.py
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# ---- reading a side: a file, or `path@gitref` ------------------------------------------


class SideError(Exception):
    pass


def split_ref(arg: str) -> tuple[str, Optional[str]]:
    """`specs/x.ect@HEAD~1` -> ("specs/x.ect", "HEAD~1"); a plain existing path has no ref."""
    if "@" in arg and not Path(arg).exists():
        path, ref = arg.rsplit("@", 1)
        return path, (ref or "HEAD")
    return arg, None


def read_side(arg: str, cwd: Optional[Path] = None) -> str:
    path, ref = split_ref(arg)
    if ref is None:
        try:
            return Path(cwd or ".", path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SideError(f"cannot read {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                            f"{exc.start})") from None
        except OSError as exc:
            raise SideError(f"cannot read {path}: {exc.strerror}") from None
    return git_show(path, ref, cwd)


def git_show(path: str, ref: str, cwd: Optional[Path] = None) -> str:
    where = Path(cwd or ".").resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=where, capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SideError(f"{path}@{ref}: not inside a git repository") from None
    try:
        rel = (where / path).resolve().relative_to(Path(top).resolve()).as_posix()
    except ValueError:
        raise SideError(f"{path}@{ref}: {path} is outside the repository {top}") from None
    # The ref is user input that reaches git's command line: one starting with "-" would be an
    # option (`--output=FILE` made git write a file). Refuse it, then resolve the ref to a commit
    # id, so what git show receives starts with hex digits whatever the user typed.
    if ref.startswith("-"):
        raise SideError(f"{path}@{ref}: a git ref cannot start with '-'")
    resolved = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
                              cwd=top, capture_output=True, text=True)
    if resolved.returncode != 0:
        raise SideError(f"{path}@{ref}: unknown git revision {ref!r}")
    proc = subprocess.run(["git", "show", f"{resolved.stdout.strip()}:{rel}", "--"], cwd=top,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SideError(f"{path}@{ref}: {proc.stderr.strip() or 'git show failed'}")
    return proc.stdout


# ---- the IR as plain data ----------------------------------------------------------------


def strip_spans(obj: Any) -> Any:
    from .ir import SPAN_FIELDS

    if isinstance(obj, dict):
        return {k: strip_spans(v) for k, v in obj.items() if k not in SPAN_FIELDS}
    if isinstance(obj, list):
        return [strip_spans(v) for v in obj]
    return obj


_LEVEL = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4,
          "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


def num(value: float, is_int: bool = False) -> str:
    if is_int:
        return str(int(value))
    return repr(float(value))


def expr(e: Optional[dict], level: int = 0) -> str:
    """An IR expression back in spec syntax (parenthesised only where needed)."""
    if e is None:
        return ""
    k = e["kind"]
    if k == "num":
        return num(e["value"], e["is_int"])
    if k == "str":
        return json.dumps(e["value"], ensure_ascii=False)
    if k == "bool":
        return "true" if e["value"] else "false"
    if k == "name":
        return e["id"]
    if k == "list":
        return "[" + ", ".join(expr(i) for i in e["items"]) + "]"
    if k == "call":
        return f"{e['func']}({', '.join(expr(a) for a in e['args'])})"
    if k == "attr":
        return f"{expr(e['obj'], 9)}.{e['attr']}"
    if k == "index":
        return f"{expr(e['obj'], 9)}[{expr(e['index'])}]"
    if k == "unary":
        text = f"not {expr(e['operand'], 3)}" if e["op"] == "not" else f"-{expr(e['operand'], 8)}"
        mine = 3 if e["op"] == "not" else 8
    elif k == "binary":
        mine = _LEVEL[e["op"]]
        # Comparisons do not chain: `(a == b) == c` keeps its parentheses.
        text = f"{expr(e['left'], mine + (mine == 4))} {e['op']} {expr(e['right'], mine + 1)}"
    elif k == "if":
        mine = 0
        text = f"if {expr(e['cond'])} then {expr(e['then'])} else {expr(e['orelse'])}"
    else:  # pragma: no cover
        return json.dumps(e, sort_keys=True)
    return f"({text})" if mine < level else text


def quote(s: Optional[str]) -> Optional[str]:
    return None if s is None else json.dumps(s, ensure_ascii=False)


def interval(i: dict) -> str:
    return f"{'[' if i['low_closed'] else '('}{num(i['low'])}, {num(i['high'])}{']' if i['high_closed'] else ')'}"


# ---- what an item is: per IR node type, its own items and its child lists --------------

Render = Callable[[dict], Optional[str]]


def _r_axis_holdout(n: dict) -> Optional[str]:
    parts = [interval(i) for i in n["holdout_intervals"]] + [v["id"] for v in n["holdout_values"]]
    return ", ".join(parts) or None


def _r_source(n: dict) -> str:
    s = n["source"]
    return s["type"] + (f" {quote(s['arg'])}" if s["arg"] is not None else "")


def _r_field(n: dict) -> str:
    text = f"{n['type']}" + (f" = {expr(n['expr'])}" if n["expr"] else "")
    return text + (f" fallback {expr(n['fallback'])}" if n["fallback"] else "")


def _r_response(n: dict) -> str:
    if n["type"] == "choice":
        return "choice [" + ", ".join(quote(c) or "" for c in n["choices"]) + "]"
    return n["type"]


def _r_monitor(n: dict) -> str:
    text = n["type"]
    if n["model"] is not None:
        text += f" {quote(n['model'])}"
    if n["expr"] is not None:
        text += f" = {expr(n['expr'])}"
    return text


def _r_verdict(n: dict) -> str:
    if n["type"] == "enum":
        return " | ".join(n["values"])
    text = n["type"]
    if n["low"] is not None or n["high"] is not None:
        text += f" {num(n['low'], True) if n['low'] is not None else ''}..{num(n['high'], True) if n['high'] is not None else ''}"
    return text


def arm_text(n: dict) -> str:
    out = []
    for p in n["parts"]:
        if p["key"] == "label_fixed":
            out.append(f"label fixed {expr(p['expr'])}")
        elif p["key"] == "filter":
            out.append(f"filter {expr(p['expr'])}")
        else:
            out.append(f"{p['key']} {p['word']}")
    return ", ".join(out)


def _r_model(n: dict) -> str:
    return n["type"] + (f" {quote(n['path'])}" if n["path"] is not None else "") \
        + (f" in {quote(n['package'])}" if n.get("package") is not None else "")


def _r_metric(n: dict) -> str:
    return expr(n["expr"]) + (f" where {expr(n['where'])}" if n["where"] else "")


def _r_sweep(n: dict) -> str:
    if n["values"]:
        return f"{n['axis']} over [{', '.join(v['id'] for v in n['values'])}]"
    return f"{n['axis']} from {num(n['low'])} to {num(n['high'])} step {num(n['step'])}"


def _r_compare(n: dict) -> str:
    return (", ".join(f"{a['id']} vs {b['id']}" for a, b in n["pairs"]) + " on "
            + ", ".join(m["id"] for m in n["metrics"]))


def _r_require(n: dict) -> str:
    return f"{n['op']} {num(n['value'])}"


def _r_setting(n: dict) -> Optional[str]:
    if n["value"] is not None:
        return expr(n["value"])
    return "{}" if not n["block"] else None


def _name(prefix: str) -> Callable[[dict], str]:
    return lambda n: prefix + n["name"]


def _const(key: str) -> Callable[[dict], str]:
    return lambda n: key


# type -> (items: [(suffix, fields, render)], lists: [(field, child type, key)])
NODES: dict[str, tuple[list[tuple[str, list[str], Render]], list[tuple[str, str, Callable[[dict], str]]]]] = {
    "Spec": ([], [("experiments", "Experiment", lambda n: n["name"])]),
    "Experiment": ([], [
        ("descriptions", "Template", _const("description")), ("axes", "Axis", _name("axis.")),
        ("labels", "Template", _const("label")), ("unlabeled", "Template", _const("unlabeled")),
        ("systems", "Template", _const("system")), ("prompts", "Template", _const("prompt")),
        ("data", "DataBlock", _name("data.")), ("responses", "Response", _const("response")),
        ("feedbacks", "Feedback", _const("feedback")), ("monitors", "Monitor", _name("monitor.")),
        ("arms", "Arm", _name("arm.")), ("profiles", "Profile", _name("profile.")),
        ("evaluates", "Evaluate", _const("evaluate")),
    ]),
    "Template": ([("", ["text"], lambda n: quote(n["text"]))], []),
    "Axis": ([("type", ["type"], lambda n: n["type"]),
              ("domain", ["domain"], lambda n: interval(n["domain"]) if n["domain"] else None),
              ("train", ["train"], lambda n: expr(n["train"]) or None),
              ("holdout", ["holdout_intervals", "holdout_values"], _r_axis_holdout),
              ("deploy", ["deploy"], lambda n: expr(n["deploy"]) or None)],
             [("values", "AxisValue", _name("value."))]),
    "AxisValue": ([("", ["description"], lambda n: quote(n["description"]) or "")], []),
    "DataBlock": ([("source", ["source"], _r_source)],
                  [("fields", "DataField", lambda n: n["name"]), ("assigns", "Assign", lambda n: n["name"]),
                   ("settings", "Setting", lambda n: n["key"])]),
    "DataField": ([("", ["type", "expr", "fallback"], _r_field)], []),
    "Assign": ([("", ["expr"], lambda n: expr(n["expr"]))], []),
    "Setting": ([("", ["value"], _r_setting)], [("block", "Setting", lambda n: n["key"])]),
    "Response": ([("", ["type", "choices"], _r_response)], [("settings", "Setting", lambda n: n["key"])]),
    "Feedback": ([], [("assigns", "Assign", lambda n: n["name"])]),
    "Monitor": ([("", ["type", "model", "expr"], _r_monitor)],
                [("settings", "Setting", lambda n: n["key"]), ("returns", "VerdictField", _name("returns."))]),
    "VerdictField": ([("", ["type", "low", "high", "values"], _r_verdict)], []),
    "Arm": ([("", ["parts"], arm_text)], []),
    "Profile": ([("default", ["default"], lambda n: "true" if n["default"] else "false")],
                [("models", "Model", _const("model")), ("settings", "Setting", lambda n: n["key"])]),
    "Model": ([("", ["type", "path", "package"], _r_model)], [("settings", "Setting", lambda n: n["key"])]),
    "Evaluate": ([], [("probes", "Probe", _name("probe.")), ("metrics", "Metric", _name("metric.")),
                      ("sweeps", "Sweep", _const("sweep")), ("comparisons", "Comparison", _const("compare")),
                      ("settings", "Setting", lambda n: n["key"]),
                      ("requires", "Require", lambda n: "require." + n["probe"]["id"])]),
    "Probe": ([], [("settings", "Setting", lambda n: n["key"]), ("assigns", "Assign", lambda n: n["name"])]),
    "Metric": ([("", ["expr", "where"], _r_metric)], []),
    "Sweep": ([("", ["axis", "low", "high", "step", "values"], _r_sweep)], []),
    "Comparison": ([("", ["pairs", "metrics"], _r_compare)], []),
    "Require": ([("", ["op", "value"], _r_require)], []),
}


@dataclass
class Change:
    op: str                      # "+", "-", "~"
    path: str                    # sycophancy.evaluate.sweep
    old: Optional[str] = None
    new: Optional[str] = None
    children: list[tuple[str, str]] = field(default_factory=list)  # an added/removed group's items
    consequence: str = ""
    # where to apply the change alone to OLD's IR (dict paths)
    action: tuple = ()

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("action")
        d["children"] = [{"path": p, "value": v} for p, v in self.children]
        return d


def _keyed(items: list[dict], keyfn: Callable[[dict], str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, item in enumerate(items):
        key = keyfn(item)
        if key in out:
            n = 2
            while f"{key}#{n}" in out:
                n += 1
            key = f"{key}#{n}"
        out[key] = i
    return out


def _join(prefix: str, suffix: str) -> str:
    return f"{prefix}.{suffix}" if prefix and suffix else (prefix or suffix)


def leaves(node: dict, typ: str, prefix: str) -> list[tuple[str, str]]:
    """Every item of one side's node, for showing an added or removed group."""
    items, lists = NODES[typ]
    out = []
    for suffix, _fields, render in items:
        value = render(node)
        if value is not None:
            out.append((_join(prefix, suffix), value))
    for fld, child, keyfn in lists:
        for key, i in _keyed(node[fld] or [], keyfn).items():
            out += leaves(node[fld][i], child, _join(prefix, key))
    return out


def walk(old: dict, new: dict, typ: str, prefix: str, oloc: tuple, nloc: tuple,
         changes: list[Change], unchanged: list[int]) -> None:
    """Compare two matched nodes (span-free dicts); record changes with how to apply each alone."""
    items, lists = NODES[typ]
    for suffix, fields, render in items:
        ov, nv = render(old), render(new)
        if all(strip_spans(old[f]) == strip_spans(new[f]) for f in fields):
            if ov is not None:
                unchanged[0] += 1
            continue
        op = "+" if ov is None else "-" if nv is None else "~"
        changes.append(Change(op, _join(prefix, suffix), ov, nv, action=("set", oloc, nloc, tuple(fields))))
    for fld, child, keyfn in lists:
        olist, nlist = old[fld] or [], new[fld] or []
        okeys, nkeys = _keyed(olist, keyfn), _keyed(nlist, keyfn)
        for key, i in okeys.items():
            path = _join(prefix, key)
            if key in nkeys:
                j = nkeys[key]
                walk(olist[i], nlist[j], child, path, oloc + (fld, i), nloc + (fld, j), changes, unchanged)
            else:
                lv = leaves(olist[i], child, path)
                changes.append(_group("-", path, lv, ("delete", oloc + (fld, i))))
        for key, j in nkeys.items():
            if key not in okeys:
                path = _join(prefix, key)
                lv = leaves(nlist[j], child, path)
                if old[fld] is None:
                    action: tuple = ("set", oloc, nloc, (fld,))
                else:
                    action = ("insert", oloc + (fld,), nloc + (fld, j), j)
                changes.append(_group("+", path, lv, action))


def _group(op: str, path: str, lv: list[tuple[str, str]], action: tuple) -> Change:
    value = lv[0][1] if len(lv) == 1 and lv[0][0] == path else None
    children = [] if value is not None else [(p[len(path) + 1:] if p.startswith(path + ".") else p, v) for p, v in lv]
    if op == "+":
        return Change(op, path, None, value, children, action=action)
    return Change(op, path, value, None, children, action=action)


def _get(d: Any, loc: tuple) -> Any:
    for k in loc:
        d = d[k]
    return d


def _path_copy(d: Any, loc: tuple) -> tuple[Any, Any]:
    """A copy of `d` sharing everything except the containers along `loc`; returns (copy, node at loc)."""
    root = copy.copy(d)
    node = root
    for k in loc:
        child = copy.copy(node[k])
        node[k] = child
        node = child
    return root, node


def apply_change(old_dump: dict, new_dump: dict, action: tuple) -> dict:
    """OLD's IR (with spans) with one change of NEW applied; neither input is modified."""
    kind = action[0]
    if kind == "set":
        _, oloc, nloc, fields = action
        d, target = _path_copy(old_dump, oloc)
        source = _get(new_dump, nloc)
        for f in fields:
            target[f] = source[f]
    elif kind == "delete":
        loc = action[1]
        d, lst = _path_copy(old_dump, loc[:-1])
        del lst[loc[-1]]
    elif kind == "insert":
        _, oloc, nloc, index = action
        d, lst = _path_copy(old_dump, oloc)
        lst.insert(min(index, len(lst)), _get(new_dump, nloc))
    else:
        d = old_dump
    return d


# ---- consequences: compare the stage keys the runtime would compute ------------------------


def generated_experiments(spec, source: str) -> dict:
    from .generate import compile_in_memory

    return compile_in_memory(spec, source)


def all_keys(exps: dict) -> dict[str, dict[str, dict]]:
    """experiment -> profile -> stage -> key, for every profile with its own seeds, all arms."""
    from .plan import stages

    out: dict[str, dict[str, dict]] = {}
    for name, exp in exps.items():
        out[name] = {}
        for profile in exp.plan.profiles:
            graph = stages.keys(exp, stages.shape(exp, profile))
            out[name][profile] = {"keys": {s: k.key for s, k in graph.items()},
                                  "trains": sorted({a.name for a in exp.plan.arms if a.trains})}
    return out


def _arm_list(arms: list[str]) -> str:
    return ", ".join(arms)


def _seed_of(stage: str) -> tuple[str, int]:
    words = stage.split()
    return words[1], int(words[-1])


def describe_effect(old: dict, new: dict) -> str:
    """What re-running NEW where OLD ran costs, from the two stage-key maps of one profile."""
    ok, nk = old["keys"], new["keys"]

    def changed(stage: str) -> bool:
        return stage in ok and stage in nk and ok[stage] != nk[stage]

    if changed("data"):
        return "forces new data and re-training of all arms"
    if changed("base model"):
        return "forces a new base model and re-training of all arms"
    phrases: list[str] = []
    o_train = {_seed_of(s): k for s, k in ok.items() if s.startswith("train ")}
    n_train = {_seed_of(s): k for s, k in nk.items() if s.startswith("train ")}
    o_arms = {a for a, _ in o_train}
    n_arms = {a for a, _ in n_train}
    order = list(dict.fromkeys([a for a, _ in n_train] + [a for a, _ in o_train]))
    retrain = [a for a in order if any(j in o_train and o_train[j] != k for j, k in n_train.items() if j[0] == a)]
    if retrain:
        every = [a for a in order if a in n_arms and a in o_arms]
        phrases.append("forces re-training of all arms" if retrain == every and len(every) > 1
                       else f"forces re-training of arm{'s' if len(retrain) > 1 else ''} {_arm_list(retrain)}")
    new_arms = [a for a in order if a in n_arms and a not in o_arms]
    if new_arms:
        phrases.append(f"trains new arm{'s' if len(new_arms) > 1 else ''} {_arm_list(new_arms)}")
    more = sorted({s for (a, s) in n_train if (a, s) not in o_train and a in o_arms})
    if more:
        phrases.append(f"trains seed{'s' if len(more) > 1 else ''} {', '.join(map(str, more))} of every trained arm")
    fewer = sorted({s for (a, s) in o_train if (a, s) not in n_train and a in n_arms})
    o_eval = {_seed_of(s)[0] for s in ok if s.startswith("evaluate ")}
    n_eval = {_seed_of(s)[0] for s in nk if s.startswith("evaluate ")}
    gone = [a for a in dict.fromkeys(_seed_of(s)[0] for s in ok if s.startswith("evaluate ")) if a not in n_eval]
    retrained = set(retrain) | set(new_arms)
    new_exp_arms = [_seed_of(s)[0] for s in nk if s.startswith("evaluate ")]
    re_eval = [a for a in dict.fromkeys(new_exp_arms)
               if a in o_eval and any(changed(s) for s in nk if s.startswith(f"evaluate {a} seed "))]
    trained_as = new.get("trained_as", {})
    re_eval = [a for a in re_eval if trained_as.get(a, a) not in retrained]
    eval_new = [a for a in dict.fromkeys(new_exp_arms) if a not in o_eval and trained_as.get(a, a) not in retrained]
    if re_eval:
        every_eval = [a for a in dict.fromkeys(new_exp_arms) if a in o_eval]
        if not phrases:
            phrases.append("re-evaluation only" + ("" if re_eval == every_eval else f" (arm{'s' if len(re_eval) > 1 else ''} {_arm_list(re_eval)})"))
        else:
            phrases.append(f"re-evaluation of arm{'s' if len(re_eval) > 1 else ''} {_arm_list(re_eval)}")
    if eval_new:
        phrases.append(f"evaluates new arm{'s' if len(eval_new) > 1 else ''} {_arm_list(eval_new)}")
    # Judged again over stored samples: no generation, only new verdicts.
    re_judge = [a for a in dict.fromkeys(_seed_of(s)[0] for s in nk if s.startswith("judge "))
                if any(changed(s) for s in nk if s.startswith(f"judge {a} seed "))
                and a not in re_eval and a not in eval_new and trained_as.get(a, a) not in retrained]
    if re_judge:
        every_judged = [a for a in dict.fromkeys(_seed_of(s)[0] for s in nk if s.startswith("judge ")) if a in o_eval]
        which = "" if re_judge == every_judged else f" (arm{'s' if len(re_judge) > 1 else ''} {_arm_list(re_judge)})"
        phrases.append(("re-judge only" if not phrases else "re-judges") + which)
    if gone:
        phrases.append(("report only: " if not phrases else "") + f"drops arm{'s' if len(gone) > 1 else ''} {_arm_list(gone)}")
    if fewer:
        phrases.append(("report only: " if not phrases else "") + f"drops seed{'s' if len(fewer) > 1 else ''} {', '.join(map(str, fewer))}")
    if not phrases and changed("probes"):
        phrases.append("re-runs the probes")
    if not phrases and changed("report"):
        phrases.append("report only")
    return "; ".join(phrases) or "no effect on runs"


def consequence(old_keys: dict, new_keys: dict) -> str:
    parts: list[str] = []
    multi = len(set(old_keys) | set(new_keys)) > 1
    for exp in list(dict.fromkeys([*old_keys, *new_keys])):
        where = f"experiment {exp}: " if multi else ""
        if exp not in old_keys:
            parts.append(f"{where}new experiment: everything runs")
            continue
        if exp not in new_keys:
            parts.append(f"{where}experiment removed")
            continue
        o, n = old_keys[exp], new_keys[exp]
        per: dict[str, str] = {}
        for prof in dict.fromkeys([*o, *n]):
            if prof not in o:
                per[prof] = "new profile: runs from scratch"
            elif prof not in n:
                per[prof] = "profile removed"
            else:
                per[prof] = describe_effect(o[prof], n[prof])
        effects = set(per.values())
        if len(effects) == 1:
            parts.append(where + effects.pop())
        else:
            shown = [f"profile {p}: {e}" for p, e in per.items() if e != "no effect on runs"]
            parts.append(where + "; ".join(shown))
    return "; ".join(parts)


def keys_with_arms(exps: dict) -> dict:
    out = all_keys(exps)
    for name, exp in exps.items():
        for prof in out[name].values():
            prof["trained_as"] = {a.name: a.trained_as for a in exp.plan.arms}
    return out


# ---- weakening the experiment: warnings of their own -----------------------------------------


def _axis(axis: dict):
    """An axis of an IR dump as the IR: the checker's own functions then say what it trains on."""
    from . import ir

    return ir.from_data(ir.Axis, axis)


def _holdout_overlap(axis: dict) -> bool:
    from .check import enum_names, overlaps, train_range

    ax = _axis(axis)
    if ax.train is None:
        return False
    if ax.type == "enum":
        return bool({v.id for v in ax.holdout_values} & enum_names(ax.train))
    rng = train_range(ax.train)
    return bool(rng and any(overlaps(i, rng) for i in ax.holdout_intervals))


def _deploy_trained(axis: dict) -> bool:
    from . import ir
    from .check import enum_names, train_range

    ax = _axis(axis)
    if ax.deploy is None or ax.train is None:
        return False
    if ax.type == "enum":
        return isinstance(ax.deploy, ir.Name) and ax.deploy.id in enum_names(ax.train)
    rng = train_range(ax.train)
    return bool(rng and isinstance(ax.deploy, ir.Num) and rng[0] <= ax.deploy.value <= rng[1])


def _controls(exp: dict) -> dict[str, str]:
    out = {}
    for arm in exp["arms"]:
        parts = {p["key"]: p for p in arm["parts"]}
        label = parts["label"]["word"] if "label" in parts else (None if "label_fixed" in parts or "reuse" in parts else "none")
        if label == "none":
            out[arm["name"]] = "baseline"
        elif label == "shuffled":
            out[arm["name"]] = "shuffled baseline"
        elif "reuse" in parts and parts["reuse"]["word"] == "base":
            out[arm["name"]] = "out-of-the-box base model"
        elif "reuse" in parts and parts.get("infer", {}).get("word") == "deploy":
            out[arm["name"]] = "prompt-only control"
    return out


def _seeds(profile: dict) -> int:
    for s in profile["settings"]:
        if s["key"] == "seeds" and s["value"] and s["value"]["kind"] == "num":
            return int(s["value"]["value"])
    return 1


def _sees(monitor: dict) -> set[str]:
    for s in monitor["settings"]:
        if s["key"] == "sees" and s["value"] and s["value"]["kind"] == "list":
            return {i["id"] for i in s["value"]["items"] if i["kind"] == "name"}
    return set()


def weakening(old: dict, new: dict) -> list[str]:
    """Changes that weaken the experiment, from the two span-free IR dicts."""
    out: list[str] = []
    olds = {e["name"]: e for e in old["experiments"]}
    for exp in new["experiments"]:
        o = olds.get(exp["name"])
        if o is None:
            continue
        name = exp["name"]
        oaxes = {a["name"]: a for a in o["axes"]}
        for axis in exp["axes"]:
            oa = oaxes.get(axis["name"])
            if oa is None:
                continue
            if _holdout_overlap(axis) and not _holdout_overlap(oa):
                out.append(f"{name}: the held-out range of `{axis['name']}` now overlaps the training range: "
                           "the deployment test no longer measures extrapolation")
            if _deploy_trained(axis) and not _deploy_trained(oa):
                out.append(f"{name}: the deployment value of `{axis['name']}` ({expr(axis['deploy'])}) moved into "
                           "the training range: the experiment no longer tests extrapolation")
        ncontrols = _controls(exp)
        for arm, what in _controls(o).items():
            if arm not in ncontrols:
                gone = arm not in {a["name"] for a in exp["arms"]}
                out.append(f"{name}: control arm `{arm}` ({what}) {'removed' if gone else 'is no longer a control'}: "
                           "the ECT effect can no longer be separated from it")
        oprof = {p["name"]: p for p in o["profiles"]}
        for p in exp["profiles"]:
            if p["name"] in oprof and _seeds(p) < _seeds(oprof[p["name"]]):
                out.append(f"{name}: profile {p['name']} has fewer seeds ({_seeds(oprof[p['name']])} -> {_seeds(p)}): "
                           "wider confidence intervals")
        forbidden = {"label"} | {a["name"] for a in exp["axes"]} | {f"{a['name']}_description" for a in exp["axes"]}
        omon = {m["name"]: m for m in o["monitors"]}
        for m in exp["monitors"]:
            gained = (_sees(m) & forbidden) - (_sees(omon[m["name"]]) if m["name"] in omon else set())
            if gained:
                out.append(f"{name}: monitor `{m['name']}` now sees the evaluation label "
                           f"({', '.join(sorted(gained))}): its scores are no longer blind")
    return out


# ---- the diff ------------------------------------------------------------------------------


@dataclass
class DiffResult:
    old_label: str
    new_label: str
    changes: list[Change]
    unchanged: int
    warnings: list[str]
    consequence: str
    errors: list[str] = field(default_factory=list)  # a side that does not compile (after parse)

    @property
    def equal(self) -> bool:
        return not self.changes

    def to_json(self) -> dict:
        return {"old": self.old_label, "new": self.new_label, "equal": self.equal,
                "changes": [c.to_json() for c in self.changes], "unchanged": self.unchanged,
                "warnings": self.warnings, "consequence": self.consequence, "errors": self.errors}


def _lower(source: str, label: str):
    """(IR, error text or None): parse and lower must succeed; check errors are reported."""
    from .check import check
    from .compile import front
    from .errors import CompileError

    spec, diags = front(source)  # CompileError propagates: nothing to diff
    diags = diags + check(spec)
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        return spec, CompileError(diags).render(source, label)
    return spec, None


def diff_sources(old_src: str, new_src: str, old_label: str = "OLD", new_label: str = "NEW",
                 consequences: bool = True) -> DiffResult:
    from . import ir

    old_spec, old_err = _lower(old_src, old_label)
    new_spec, new_err = _lower(new_src, new_label)
    old_dump, new_dump = ir.to_data(old_spec), ir.to_data(new_spec)
    old_plain, new_plain = strip_spans(old_dump), strip_spans(new_dump)
    errors = [e for e in (old_err, new_err) if e]
    if old_plain == new_plain:
        return DiffResult(old_label, new_label, [], _count(old_dump), [], "no effect on runs", errors)
    changes: list[Change] = []
    unchanged = [0]
    walk(old_dump, new_dump, "Spec", "", (), (), changes, unchanged)
    if not changes:  # the renderers missed a difference: never report "equal" when it is not
        changes.append(Change("~", "spec", "(internal)", "(internal)", action=("all",)))
    warnings = weakening(old_plain, new_plain)
    overall = "unknown: a side does not compile"
    if consequences and not errors:
        base = keys_with_arms(generated_experiments(old_spec, old_src))
        overall = consequence(base, keys_with_arms(generated_experiments(new_spec, new_src)))
        for ch in changes:
            if len(changes) == 1 or ch.action == ("all",):
                ch.consequence = overall
                continue
            try:
                hybrid = ir.from_data(ir.Spec, apply_change(old_dump, new_dump, ch.action))
                from .check import check

                if any(d.severity == "error" for d in check(hybrid)):
                    raise ValueError("the change alone does not compile")
                ch.consequence = consequence(base, keys_with_arms(generated_experiments(hybrid, old_src)))
            except Exception:  # noqa: BLE001 - a change that only makes sense with others
                ch.consequence = f"together with the other changes: {overall}"
    elif errors:
        for ch in changes:
            ch.consequence = overall
    return DiffResult(old_label, new_label, changes, unchanged[0], warnings, overall, errors)


def _count(dump: dict) -> int:
    changes: list[Change] = []
    unchanged = [0]
    walk(dump, dump, "Spec", "", (), (), changes, unchanged)
    return unchanged[0]


# ---- output ----------------------------------------------------------------------------------


def short(value: Optional[str], other: Optional[str] = None, width: int = 70) -> str:
    """A value on one line; a long one is cut around where it differs from `other`."""
    if value is None:
        return "(none)"
    if len(value) <= width:
        return value
    start = 0
    if other is not None:
        while start < min(len(value), len(other)) and value[start] == other[start]:
            start += 1
        start = max(0, start - width // 3)
    text = value[start:start + width]
    return ("…" if start else "") + text + ("…" if start + width < len(value) else "")


def render_text(res: DiffResult, color: bool = False) -> str:
    def c(style: str, text: str) -> str:
        return f"[{style}]{text}[/]" if color else text

    style = {"+": "green", "-": "red", "~": "yellow"}
    lines = [f"ectc diff: {res.old_label} -> {res.new_label}", ""]
    if res.equal:
        lines.append(f"No changes: the specs are semantically equal ({res.unchanged} items).")
        return "\n".join(lines) + "\n"
    for ch in res.changes:
        mark = c(style[ch.op], ch.op)
        if ch.op == "~":
            lines.append(f"  {mark} {ch.path}: {short(ch.old, ch.new)} -> {short(ch.new, ch.old)}")
        elif ch.children:
            lines.append(f"  {mark} {ch.path}")
            lines += [f"        {p} = {short(v)}" for p, v in ch.children]
        else:
            lines.append(f"  {mark} {ch.path} = {short(ch.new if ch.op == '+' else ch.old)}")
        if ch.consequence:
            lines.append(f"      => {ch.consequence}")
    lines.append("")
    for w in res.warnings:
        lines.append(c("bold red", "warning:") + f" {w}")
    if res.warnings:
        lines.append("")
    n = {op: sum(1 for ch in res.changes if ch.op == op) for op in "+~-"}
    lines.append(f"{n['+']} to add, {n['~']} to change, {n['-']} to remove; {res.unchanged} unchanged items hidden.")
    lines.append(f"Overall: {res.consequence}")
    return "\n".join(lines) + "\n"


def _md_cell(text: Optional[str]) -> str:
    if text is None:
        return ""
    return "`" + short(text).replace("|", "\\|").replace("`", "'") + "`"


def render_md(res: DiffResult) -> str:
    lines = [f"### `ectc diff` {res.old_label} → {res.new_label}", ""]
    if res.equal:
        lines.append(f"No semantic changes ({res.unchanged} items).")
        return "\n".join(lines) + "\n"
    for w in res.warnings:
        lines.append(f"> :warning: **{w}**")
    if res.warnings:
        lines.append("")
    lines += ["| | item | old | new | consequence |", "|---|---|---|---|---|"]
    for ch in res.changes:
        old, new = ch.old, ch.new
        if ch.children:
            summary = "; ".join(f"{p} = {v}" for p, v in ch.children)
            old, new = (summary, None) if ch.op == "-" else (None, summary)
        lines.append(f"| {ch.op} | `{ch.path}` | {_md_cell(old)} | {_md_cell(new)} | {ch.consequence} |")
    n = {op: sum(1 for ch in res.changes if ch.op == op) for op in "+~-"}
    lines += ["", f"{n['+']} to add, {n['~']} to change, {n['-']} to remove; {res.unchanged} unchanged items hidden.",
              "", f"**Overall:** {res.consequence}"]
    return "\n".join(lines) + "\n"
