"""How much of the input a compressor may keep."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """A kept fraction (`rate`) or an absolute token count (`target_tokens`), exactly one.

    Tokens are counted with the tokenizer of the model that reads the result, so
    `Budget(rate=0.3)` means "keep 30% of the reader's tokens", not of the compressor's.
    """

    rate: float | None = None
    target_tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.target_tokens is None):
            raise ValueError("Budget needs exactly one of rate or target_tokens")
        if self.rate is not None:
            if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)):
                raise ValueError(f"Budget rate must be a number, got {type(self.rate).__name__}")
            if not (0.0 < self.rate <= 1.0) or math.isnan(self.rate):
                raise ValueError(f"Budget rate must be in (0, 1], got {self.rate}")
        if self.target_tokens is not None:
            if isinstance(self.target_tokens, bool) or not isinstance(self.target_tokens, int):
                raise ValueError(
                    f"Budget target_tokens must be an integer, got {type(self.target_tokens).__name__}"
                )
            if self.target_tokens < 1:
                raise ValueError(f"Budget target_tokens must be >= 1, got {self.target_tokens}")

    def tokens_for(self, tokens_in: int) -> int:
        """The most tokens a result may hold for an input of `tokens_in` tokens."""
        if self.target_tokens is not None:
            return min(self.target_tokens, tokens_in)
        assert self.rate is not None
        return min(tokens_in, math.floor(self.rate * tokens_in + 1e-9))

    def requested_rate(self, tokens_in: int) -> float:
        """The budget as a kept fraction of this input (1.0 for an empty input)."""
        if tokens_in <= 0:
            return 1.0
        return self.tokens_for(tokens_in) / tokens_in

    def __str__(self) -> str:
        if self.rate is not None:
            return f"rate={self.rate:g}"
        return f"target_tokens={self.target_tokens}"
