"""Chat completions from a run, streamed as they are generated: what the server's worker runs.

The base model is loaded with the run's LoRA adapters merged into its weights (no adapter
overhead per token), in the precision the device suits (src/devices.py: bf16 or fp16 on
GPUs; fp32 on CPU). A conversation goes through the tokenizer's chat template with the
assistant's turn opened; `model.generate` runs in a thread and hands each decoded piece to
a TextIteratorStreamer, so the first words reach the client while the rest are computed.
Stop strings end the completion where they begin (they are not part of it); the usage
counts are the prompt's tokens and those generated.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from src.devices import serving_precision
from src.model_folder import fail
from src.task.folder import PROBE_CHAT, RunFolder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_TEMPERATURE = 1e-5  # below it sampling is greedy decoding (and divides the scores into infinities)
STREAM_TIMEOUT_S = 600.0  # the longest wait for the next piece before the worker gives up


def resolve_precision(requested: str, device_type: str) -> str:
    """serving.precision for this device: auto is fp32 on CPU, else as devices.py says."""
    return serving_precision(requested, device_type, on_cpu="fp32")


def load_model(folder: RunFolder, device: str, precision: str, merge: bool = True) -> tuple[Any, Any]:
    """The tokenizer and the base model with the adapters (merged into it for serving, or as a PeftModel),
    probed: a model whose scores are not finite is refused (BadModelFolderError)."""
    tokenizer = AutoTokenizer.from_pretrained(folder.path)
    base = AutoModelForCausalLM.from_pretrained(folder.base_model, dtype=DTYPES[precision])
    model: Any = PeftModel.from_pretrained(base, folder.path)
    if merge:
        model = model.merge_and_unload()
    model = model.to(device).eval()
    _probe(tokenizer, model, folder)
    return tokenizer, model


def _probe(tokenizer: Any, model: Any, folder: RunFolder) -> None:
    """Scores on a short conversation must be finite: NaN or infinite ones mean every answer is garbage."""
    ids = tokenizer.apply_chat_template(PROBE_CHAT, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]  # fmt: skip
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits
    if not bool(torch.isfinite(logits).all()):
        raise fail(folder.path, "the base model with these adapters gives NaN or infinite scores on a probe "
                   "conversation: every answer would be garbage")  # fmt: skip


class _Cancel(StoppingCriteria):
    """Ends generation when the reader has what it needs (a stop string) and counts the new tokens."""

    def __init__(self, prompt_length: int) -> None:
        self.prompt_length = prompt_length
        self.generated = 0
        self.cancelled = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.generated = int(input_ids.shape[-1]) - self.prompt_length
        done = torch.full((input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device)
        return done  # type: ignore[return-value]


@dataclass
class Stream:
    """The pieces of one completion, in order; the counts are final once it is exhausted."""

    pieces: Iterator[str]
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "length" when max_tokens ended it
    error: BaseException | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[str]:
        return self.pieces


class Generator:
    """A run's model on `device`; `stream` answers one conversation at a time."""

    def __init__(self, folder: RunFolder, device: str | torch.device = "cpu", precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device.type)
        self.tokenizer, self.model = load_model(folder, str(self.device), self.precision)
        self.positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 1_000_000)
        self.lock = threading.Lock()  # one generation at a time: the streamer and the counts are per call

    def prompt_ids(self, messages: Sequence[dict[str, str]], max_tokens: int) -> tuple[list[int], int]:
        """The chat template's tokens with the assistant's turn opened, and the new tokens there is room for.

        Prompt and completion must fit the model's positions: the completion gets what is left
        after the prompt, but at least half the positions (or max_tokens, if less); a prompt too
        long for that loses its oldest tokens.
        """
        encoded = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)  # fmt: skip
        ids: list[int] = list(encoded["input_ids"])
        if len(ids) + max_tokens <= self.positions:
            return ids, max_tokens
        room = max(min(max_tokens, self.positions - len(ids)), min(max_tokens, self.positions // 2))
        return ids[len(ids) - (self.positions - room) :], room

    def stream(
        self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
        stop: Sequence[str] = (),
    ) -> Stream:  # fmt: skip
        ids, max_tokens = self.prompt_ids(messages, max_tokens)
        result = Stream(iter(()), prompt_tokens=len(ids))
        result.pieces = self._pieces(ids, max_tokens, temperature, top_p, [text for text in stop if text], result)
        return result

    def _pieces(self, ids: list[int], max_tokens: int, temperature: float, top_p: float, stop: list[str],
                result: Stream) -> Iterator[str]:  # fmt: skip
        with self.lock:
            streamer = TextIteratorStreamer(
                self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S
            )
            cancel = _Cancel(len(ids))
            input_ids = torch.tensor([ids], device=self.device)
            sampling: dict[str, Any] = {"do_sample": False}
            if temperature >= MIN_TEMPERATURE:
                sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
            arguments = {
                "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "max_new_tokens": max_tokens,
                "streamer": streamer, "stopping_criteria": StoppingCriteriaList([cancel]),
                "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id, **sampling,
            }  # fmt: skip

            def generate() -> None:
                try:
                    with torch.inference_mode():
                        self.model.generate(**arguments)
                except BaseException as error:  # handed to the reader, which raises it
                    result.error = error
                    streamer.end()  # type: ignore[no-untyped-call]

            worker = threading.Thread(target=generate, name="generate", daemon=True)
            worker.start()
            held = ""  # text that may be the start of a stop string
            keep = max((len(text) for text in stop), default=1) - 1
            stopped = False
            try:
                for piece in streamer:
                    held += piece
                    cut = min((held.find(text) for text in stop if text in held), default=-1)
                    if cut >= 0:
                        held, stopped, cancel.cancelled = held[:cut], True, True
                        break
                    ready, held = (held[: len(held) - keep], held[len(held) - keep :]) if keep else (held, "")
                    if ready:
                        yield ready
                if held:
                    yield held
            finally:
                cancel.cancelled = True  # a reader that left early (client gone) stops the work too
                worker.join()
            if result.error is not None:
                raise result.error
            result.completion_tokens = cancel.generated
            result.finish_reason = "stop" if stopped or cancel.generated < max_tokens else "length"

    def complete(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] = ()) -> tuple[str, Stream]:  # fmt: skip
        """The whole completion at once (predict), with its counts."""
        stream = self.stream(messages, max_tokens, temperature, stop=stop)
        return "".join(stream), stream
