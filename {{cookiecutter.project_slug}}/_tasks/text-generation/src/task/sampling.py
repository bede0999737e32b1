"""What a conversation asks of the engine and what it gets back, and how each next token is picked.

Each conversation samples with its own temperature and top_p (nucleus sampling); a temperature
below MIN_TEMPERATURE is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

MIN_TEMPERATURE = 1e-5  # below it sampling is greedy decoding (and dividing the scores by it gives infinities)


@dataclass(frozen=True)
class Ask:
    """One conversation to complete: its prompt's token ids and how to sample its answer."""

    ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Piece:
    """What a conversation emits: text as it is decoded, then a last piece with why it ended and the counts;
    or an error (status: the HTTP status a server answers with)."""

    text: str = ""
    finish_reason: str | None = None  # "stop" or "length", on the last piece
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    status: int = 200


def sample(logits: torch.Tensor, asks: Sequence[Ask]) -> torch.Tensor:
    """Each row's next token: greedy, or sampled with its temperature and top_p."""
    tokens = logits.argmax(dim=-1)
    sampled = [index for index, ask in enumerate(asks) if ask.temperature >= MIN_TEMPERATURE]
    if not sampled:
        return tokens
    chosen = torch.tensor(sampled, device=logits.device)
    temperature = torch.tensor([asks[index].temperature for index in sampled], device=logits.device)
    top_p = torch.tensor([asks[index].top_p for index in sampled], device=logits.device)
    probabilities = torch.softmax(logits[chosen].float() / temperature[:, None], dim=-1)
    ordered, order = probabilities.sort(dim=-1, descending=True)
    outside = ordered.cumsum(dim=-1) - ordered > top_p[:, None]  # past the nucleus (the first token always stays)
    ordered = ordered.masked_fill(outside, 0.0)
    picked = order.gather(-1, torch.multinomial(ordered / ordered.sum(dim=-1, keepdim=True), 1)).squeeze(-1)
    tokens[chosen] = picked
    return tokens
