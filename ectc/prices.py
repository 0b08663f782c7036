"""What Claude costs: the one price table (USD per million tokens), read by the client's
accounting after a run (`runtime/llm.py`) and by `ectc plan`'s bill before it.

Torch-free and SDK-free. Prices as published by Anthropic; cache writes bill at 1.25x input,
cache reads at 0.1x. A model absent here has an unknown price: its cost is never guessed.
"""

from __future__ import annotations

from typing import Mapping, Optional

#: model-name prefix -> (input, output) USD per million tokens; the longest matching prefix wins.
PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
}
CACHE_WRITE = 1.25
CACHE_READ = 0.1


def price_for(model: str, prices: Optional[Mapping[str, tuple[float, float]]] = None) -> Optional[tuple[float, float]]:
    """(input, output) USD per million tokens, or None for a model the table does not know."""
    table = PRICES if prices is None else prices
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


def cost_usd(price: tuple[float, float], input_tokens: int, output_tokens: int,
             cache_creation_input_tokens: int = 0, cache_read_input_tokens: int = 0) -> float:
    pin, pout = price
    return (input_tokens * pin + output_tokens * pout + cache_creation_input_tokens * pin * CACHE_WRITE
            + cache_read_input_tokens * pin * CACHE_READ) / 1e6
