"""ectc: compile and run Evaluation-Conditioned Training experiments declared in .ect specs.

`ectc.load(spec)` and `ectc.run(spec, ...)` are the Python API (`ectc/api.py`), imported on
first use: `import ectc` stays as light as the command line's start."""

__version__ = "0.1.0"

_API = ("load", "run", "Run", "RunError", "SpecError")
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ectc' has no attribute {name!r}")
