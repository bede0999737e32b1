"""One generation engine for the server and for predict: conversations decoded side by side, continuously.

A thread runs the decoding steps. At each step the conversations that are running advance by
one token together, in one forward pass of the model (a batch, left-padded to the longest,
with the model's own key-value cache); conversations that wait join between two steps (their
prompts run through the model in one pass and their caches are put beside the running ones),
and one that ends (its end token, `max_tokens`, a stop string, or cancelled because its client
left) leaves the batch at once, so the others never wait for it and its place is free for the
next. Each conversation streams its own text as it is decoded, with its own sampling
(temperature, top_p; below MIN_TEMPERATURE greedy).

Limits (serving.max_sequences, serving.cache_tokens, serving.max_queued): at most
max_sequences conversations decode together, a conversation joins only while the batch's cache
(conversations x the longest) stays within cache_tokens, and at most max_queued wait; past that
`submit` refuses (the server answers 503 with Retry-After). A conversation that waited past
serving.timeout is answered with 504. The LoRA adapters are merged into the base model
(generator.load_model), so a step costs what the base model costs.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from src.task.sampling import Ask, Piece, sample


@dataclass
class _Row:
    key: str
    ask: Ask
    emit: Callable[[Piece], None]
    queued_at: float
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already emitted
    done: bool = False


class Engine:
    def __init__(self, tokenizer: Any, model: Any, max_sequences: int = 8, cache_tokens: int = 65536,
                 max_queued: int = 64, timeout: float = 600.0) -> None:  # fmt: skip
        self.tokenizer, self.model = tokenizer, model
        self.max_sequences, self.cache_tokens = max_sequences, cache_tokens
        self.max_queued, self.timeout = max_queued, timeout
        self.positions = int(getattr(model.config, "max_position_embeddings", 0) or 1_000_000)
        ends = model.generation_config.eos_token_id
        self.ends = {*(ends if isinstance(ends, list) else [ends] if ends is not None else [])}
        if tokenizer.eos_token_id is not None:
            self.ends.add(tokenizer.eos_token_id)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.ends), 0)
        self.device = model.device
        if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=model.config).layers):
            self.max_sequences = 1  # sliding-window caches do not line up side by side: one conversation at a time
        self._waiting: collections.deque[_Row] = collections.deque()
        self._cancelled: set[str] = set()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="generation-engine", daemon=True)
        self._thread.start()

    # ---- the caller's side (any thread) ----

    def prompt_ids(self, messages: Sequence[dict[str, str]], max_tokens: int) -> tuple[list[int], int]:
        """The chat template's tokens with the assistant's turn opened, and the new tokens there is room for.

        Prompt and completion must fit the model's positions: the completion gets what is left after the
        prompt, but at least half the positions (or max_tokens, if less); a prompt too long for that loses its
        oldest tokens.
        """
        encoded = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)  # fmt: skip
        ids: list[int] = list(encoded["input_ids"])
        if len(ids) + max_tokens <= self.positions:
            return ids, max_tokens
        room = max(min(max_tokens, self.positions - len(ids)), min(max_tokens, self.positions // 2))
        return ids[len(ids) - (self.positions - room) :], room

    def submit(self, key: str, ask: Ask, emit: Callable[[Piece], None]) -> bool:
        """Queue a conversation; its pieces go to `emit` (from the engine's thread). False: the engine is full."""
        with self._wake:
            free = self.max_sequences - len(self._rows)
            if self._closed or len(self._waiting) >= self.max_queued + max(free, 0):
                return False
            self._waiting.append(_Row(key, ask, emit, time.monotonic()))
            self._wake.notify()
        return True

    def cancel(self, key: str) -> None:
        """Stop a conversation (its client left): it leaves the batch before the next step, and emits nothing more."""
        with self._wake:
            self._cancelled.add(key)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def complete(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = ()) -> tuple[str, Piece]:  # fmt: skip
        """One whole completion, waited for: (its text, its last piece)."""
        [(text, last)] = self.complete_all([messages], max_tokens, temperature, stop)
        return text, last

    def complete_all(self, conversations: Sequence[Sequence[dict[str, str]]], max_tokens: int,
                     temperature: float = 0.0, stop: Sequence[str] = (),
                     finished: Callable[[], None] = lambda: None) -> list[tuple[str, Piece]]:  # fmt: skip
        """Every conversation's completion, decoded side by side (predict): (text, last piece) each, in order;
        `finished` is called as each one ends."""
        texts: list[list[str]] = [[] for _ in conversations]
        last: list[Piece | None] = [None] * len(conversations)
        done = threading.Semaphore(0)
        pending = collections.deque(range(len(conversations)))

        def collect(index: int) -> Callable[[Piece], None]:
            def emit(piece: Piece) -> None:
                texts[index].append(piece.text)
                if piece.finish_reason is not None or piece.error is not None:
                    last[index] = piece
                    finished()
                    done.release()

            return emit

        def feed() -> None:
            while pending:
                index = pending[0]
                ids, room = self.prompt_ids(conversations[index], max_tokens)
                if not self.submit(f"offline-{index}", Ask(ids, room, temperature, 1.0, tuple(stop)), collect(index)):
                    return
                pending.popleft()

        for _ in conversations:
            feed()
            done.acquire()
        results = []
        for index, piece in enumerate(last):
            if piece is None or piece.error is not None:
                raise RuntimeError(piece.error if piece else "the engine stopped")
            results.append(("".join(texts[index]), piece))
        return results

    # ---- the engine's thread ----

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._rows or self._closed):
                    self._wake.wait()
                if self._closed:
                    for row in [*self._rows, *self._waiting]:
                        row.emit(Piece(error="the server is stopping", status=503))
                    return
                cancelled, self._cancelled = self._cancelled, set()
                self._waiting = collections.deque(row for row in self._waiting if row.key not in cancelled)
                joining = self._admit()
            try:
                for row in self._rows:
                    row.done = row.done or row.key in cancelled
                self._leave()
                if joining:
                    self._join(joining)
                    self._leave()  # some end with their first token
                if self._rows:
                    self._step()
            except Exception as error:
                for row in [*self._rows, *joining]:
                    if not row.done:
                        row.emit(Piece(error=f"generation failed: {type(error).__name__}: {error}"[:300], status=500))
                self._rows, self._cache = [], None
                self._mask = self._mask[:0, :0]

    def _admit(self) -> list[_Row]:
        """The waiting conversations that join now (under the lock); those that waited too long get a 504."""
        joining: list[_Row] = []
        width = self._mask.shape[1]
        now = time.monotonic()
        while self._waiting and len(self._rows) + len(joining) < self.max_sequences:
            row = self._waiting[0]
            if now - row.queued_at > self.timeout:
                self._waiting.popleft()
                row.emit(Piece(error=f"waited more than serving.timeout ({self.timeout:g} s) for a place", status=504))
                continue
            wider = max(width, len(row.ask.ids))
            if (self._rows or joining) and (len(self._rows) + len(joining) + 1) * wider > self.cache_tokens:
                break
            joining.append(self._waiting.popleft())
            width = wider
        return joining

    def _join(self, joining: list[_Row]) -> None:
        """Run the joining prompts through the model in one left-padded pass; put their caches beside the batch's."""
        width = max(len(row.ask.ids) for row in joining)
        ids = torch.full((len(joining), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for index, row in enumerate(joining):
            ids[index, width - len(row.ask.ids) :] = torch.tensor(row.ask.ids)
            mask[index, width - len(row.ask.ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # fmt: skip
        self._merge(cache, mask)
        self._rows.extend(joining)
        self._advance(joining, logits)

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        if not self._rows:
            self._cache, self._mask = cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_front(mine.keys, width), _pad_front(theirs.keys, width)])
            mine.values = torch.cat([_pad_front(mine.values, width), _pad_front(theirs.values, width)])
        self._mask = torch.cat([_pad_front(self._mask, width), _pad_front(mask, width)])

    def _step(self) -> None:
        """Every running conversation's next token, in one forward pass."""
        last = torch.tensor([[row.generated[-1]] for row in self._rows], device=self.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        positions = self._mask.sum(dim=1, keepdim=True) - 1
        with torch.inference_mode():
            logits = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions,
                                past_key_values=self._cache, use_cache=True).logits[:, -1]  # fmt: skip
        self._advance(self._rows, logits)
        self._leave()

    def _leave(self) -> None:
        """Drop the conversations that ended from the batch, and the cache columns no one needs any more."""
        keep = [index for index, row in enumerate(self._rows) if not row.done]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[index] for index in keep]
        if not keep:
            self._cache, self._mask = None, self._mask[:0, :0]
            return
        selected = torch.tensor(keep, device=self.device)
        self._mask = self._mask[selected]
        first = int(self._mask.any(dim=0).nonzero()[0])  # columns of padding only, on the left
        self._mask = self._mask[:, first:]
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[selected, :, first:], layer.values[selected, :, first:]

    def _advance(self, rows: Sequence[_Row], logits: torch.Tensor) -> None:
        tokens = sample(logits, [row.ask for row in rows]).tolist()
        for row, token in zip(rows, tokens, strict=True):
            row.generated.append(int(token))
            self._emit(row)

    def _emit(self, row: _Row) -> None:
        """The new text of a conversation (held back where a stop string may be starting), or its end."""
        ended = row.generated[-1] in self.ends
        tokens = row.generated[:-1] if ended else row.generated
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((index for index in (text.find(stop, max(0, row.sent - len(stop) + 1)) for stop in row.ask.stop)
                   if index >= 0), default=-1)  # fmt: skip
        finish = "stop" if ended or cut >= 0 else "length" if len(row.generated) >= row.ask.max_tokens else None
        if cut >= 0:
            text = text[:cut]
        ready = len(text) if finish else len(text) - max((len(stop) - 1 for stop in row.ask.stop), default=0)
        if not finish and text.endswith("\ufffd"):  # a character whose bytes span the next token
            ready = min(ready, len(text) - 1)
        if ready > row.sent:
            row.emit(Piece(text=text[row.sent : ready]))
            row.sent = ready
        if finish:
            row.done = True
            row.emit(Piece(finish_reason=finish, prompt_tokens=len(row.ask.ids), completion_tokens=len(row.generated)))


def _pad_front(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` with zeros before its sequence dimension (the last of a mask, the third of keys and values)."""
    dim = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
