"""The contract between the compiler and the runtime.

* `model.py`: the typed, versioned plan (`generated/<exp>/experiment.json`).
* `compiled.py`: one compiled experiment (plan, templates, generated files), loaded once.
* `stages.py`: the stage graph: every stage, its inputs and its key.
* `records.py`: a finished stage's record (`stage.json`) and the content hashes of files.

Torch-free: `ectc plan`, `ectc diff` and the runtime all read it.
"""
