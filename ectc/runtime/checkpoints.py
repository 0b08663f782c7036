"""Resumable checkpoints of ectc's own training loops (the RL fast path, the warm-up).

A loop saves everything its next step depends on (trainable weights, optimizer, scheduler,
every random generator it draws from, the history so far) in one file, written atomically
(temp file + rename), and a later call with the same config continues from it and ends exactly
where an uninterrupted call does. trl's trainers (GRPO, SFT) use trl's own checkpoints instead.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Checkpoints:
    """Where (folder/name) and how often (every `every` steps; 0: never) a loop checkpoints.
    `writes` False (ranks other than 0 of a multi-process launch): load, never save."""
    folder: Path
    every: int
    writes: bool = True
    name: str = "state.pt"

    @property
    def path(self) -> Path:
        return Path(self.folder) / self.name

    def due(self, done: int, total: int) -> bool:
        """After `done` steps of `total`: the last step saves nothing (the caller saves the result)."""
        return self.every > 0 and done % self.every == 0 and done < total

    def save(self, state: dict) -> None:
        if not self.writes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.name}.{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, config: dict, mmap: bool = False) -> dict | None:
        """The last checkpoint saved under this same `config` (its "config" entry), or None.
        mmap: tensors mapped from the file, not read (a look at its step costs nothing)."""
        if not self.path.exists():
            return None
        # weights_only: tensors and plain data, nothing a file could make Python run
        state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=mmap)
        return state if state.get("config") == config else None

    def last_step(self) -> int:
        """The steps the saved checkpoint holds, whatever its config (0: none)."""
        if not self.path.exists():
            return 0
        return int(torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)["step"])

    def resume_step(self, config: dict) -> int:
        """The steps a loop with this config would skip (0: it starts from the beginning)."""
        state = self.load(config, mmap=True)
        return state["step"] if state is not None else 0


def rng_states(numpy_rng: np.random.Generator | None = None, generator: torch.Generator | None = None,
               python_rng: random.Random | None = None) -> dict:
    """torch's global generator (CUDA's too), and the loop's own numpy/torch/python generators."""
    states: dict = {"torch": torch.get_rng_state(), "python": (python_rng or random).getstate()}
    if numpy_rng is not None:
        states["numpy"] = numpy_rng.bit_generator.state
    if generator is not None:
        states["generator"] = generator.get_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, numpy_rng: np.random.Generator | None = None,
                   generator: torch.Generator | None = None, python_rng: random.Random | None = None) -> None:
    torch.set_rng_state(states["torch"])
    (python_rng or random).setstate(states["python"])
    if numpy_rng is not None:
        numpy_rng.bit_generator.state = states["numpy"]
    if generator is not None:
        generator.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_params(params: list, saved: list) -> None:
    """Trainable parameters back from a checkpoint, in the order they were saved."""
    with torch.no_grad():
        for p, value in zip(params, saved, strict=True):
            p.copy_(value.to(p.device))
