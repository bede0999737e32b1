"""The text-generation task: LoRA against full fine-tuning, and streaming serving against a hand-written app.

Run from a project generated with task=text-generation, with its interpreter:
    cd <project> && .venv/bin/python <template>/benchmarks/generation.py
Training: the smoke model and chats (src/models/smoke.py) through TRL's SFTTrainer, as
train_model.py builds it, with the smoke run's LoRA config and without it (full fine-tuning),
TRAIN_STEPS steps each in a fresh process: tokens/s over the training steps (TRL's own token
count / the Trainer's train_runtime), the process's peak resident memory, trainable parameters.
Serving: a Llama-shaped model of ~25M parameters with random weights (nothing can be
downloaded here; the time per token depends on the shapes, not on the values) and a LoRA adapter
on it, published as a run folder; `python -m src.deployment.serve` (LitServe's OpenAI spec,
adapters merged) against what users write by hand: FastAPI + transformers' TextIteratorStreamer
in a thread, the same merged model, server-sent events. Each request asks for MAX_TOKENS
greedy tokens with stream=True; time to first token is the time to the first content chunk, and
tokens are counted on the client by tokenizing the streamed text (the same rule for both apps).
Concurrency 1 and 8, ROUNDS interleaved rounds, medians. Writes
benchmarks/results/generation.json; the README quotes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write

if not (Path.cwd() / "src" / "deployment" / "generator.py").is_file():
    sys.exit("run this from a project generated with task=text-generation (it imports the project's src/)")
sys.path.insert(0, str(Path.cwd()))

TRAIN_STEPS = 60
MAX_TOKENS = 48
ROUNDS = 2
REQUESTS = {1: 6, 8: 16}
PROMPT = [{"role": "user", "content": "What is the opposite of early? Answer in one sentence."}]
OURS, HANDWRITTEN = "ours: uv run serve (LitServe OpenAI spec)", "hand-written FastAPI + TextIteratorStreamer"


def train_mode(mode: str, output_dir: str) -> None:
    """One training mode in this (fresh) process; prints its numbers as JSON."""
    from src.config import DEFAULT_SETTINGS_FILE, SMOKE_SETTINGS_FILE, load_settings
    from src.data import load_splits
    from src.models import distributed, smoke
    from src.models.train_model import _load_model, lora_config, training_arguments
    from trl.trainer.sft_trainer import SFTTrainer

    assets = smoke.build(Path(output_dir) / "assets")
    overrides = smoke.overrides(assets)
    overrides["training"] = {"output_dir": output_dir, "max_steps": TRAIN_STEPS, "eval_steps": None,
                             "save_steps": 10_000, "logging_steps": 10}  # fmt: skip
    settings = load_settings(DEFAULT_SETTINGS_FILE, environ={}, overlays=[SMOKE_SETTINGS_FILE], overrides=overrides)
    distributed.start(settings.training.seed)  # the state train_model.train() sets up first
    tokenizer, model = _load_model(settings)
    if mode == "full":
        settings = settings.model_copy(
            update={"training": settings.training.model_copy(update={"learning_rate": 1e-3})}
        )
    trainer = SFTTrainer(
        model=model, args=training_arguments(settings, Path(output_dir) / "checkpoints"),
        train_dataset=load_splits(settings.data)["train"], processing_class=tokenizer,
        peft_config=lora_config(settings) if mode == "lora" else None,
    )  # fmt: skip
    trainable = sum(parameter.numel() for parameter in trainer.model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in trainer.model.parameters())
    result = trainer.train()
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry][-1]
    print(json.dumps({
        "tokens_per_second": tokens / result.metrics["train_runtime"],
        "steps_per_second": TRAIN_STEPS / result.metrics["train_runtime"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_parameters": trainable, "total_parameters": total,
        "final_loss": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1],
    }))  # fmt: skip


def training() -> dict[str, Any]:
    found = {}
    for mode in ("lora", "full"):
        with tempfile.TemporaryDirectory(prefix=f"bench-{mode}-") as scratch:
            result = subprocess.run([sys.executable, __file__, "--train", mode, scratch], capture_output=True,
                                    text=True, check=False)  # fmt: skip
            if result.returncode != 0:
                sys.exit(f"training {mode} failed:\n{result.stderr[-3000:]}")
            found[mode] = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"training {mode}: {found[mode]['tokens_per_second']:.0f} tokens/s", flush=True)
    return found


def make_run(target: Path) -> Path:
    """A run folder on a ~25M-parameter random Llama: the adapters, the smoke tokenizer, run.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from src.models import smoke
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    assets = smoke.build(target / "assets")
    tokenizer = AutoTokenizer.from_pretrained(assets["model"])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=None, bos_token_id=None)  # fmt: skip
    base = LlamaForCausalLM(config)
    base.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    with torch.no_grad():
        # Random weights emit tokens without spaces, and a streamer sends text at word ends: all in one
        # piece at the end. Tilt the output layer towards the tokens that start a word (byte-level
        # "Ġ..."), so the text streams word by word as a trained model's does; the cost per token stays.
        encoded = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)  # fmt: skip
        hidden = base.model(**encoded).last_hidden_state[0]
        direction = hidden.mean(dim=0) / hidden.mean(dim=0).norm()
        words = [index for token, index in tokenizer.get_vocab().items() if token.startswith("Ġ")]
        base.lm_head.weight[words] += 2.0 * direction
    base.save_pretrained(target / "base")
    tokenizer.save_pretrained(target / "base")
    run = target / "run"
    base = LlamaForCausalLM.from_pretrained(target / "base")  # loaded by path: the adapter config names it
    adapted = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapted.save_pretrained(run)
    tokenizer.save_pretrained(run)
    (run / "run.json").write_text(
        json.dumps({"run_id": "bench", "base_model": str(target / "base"), "max_length": 1024})
    )
    return run


class Chat(BaseModel):
    """The hand-written app's request: at module level, where FastAPI can resolve the annotation."""

    messages: list[dict[str, str]]
    max_tokens: int = 64


def handwritten_app(run_dir: str, port: int) -> None:
    """What users write by hand: the merged model, generate() in a thread per request, SSE chunks."""
    import threading

    import torch
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    info = json.loads((Path(run_dir) / "run.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(info["base_model"]), run_dir)
    model = model.merge_and_unload().eval()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def complete(chat: Chat) -> StreamingResponse:
        ids = tokenizer.apply_chat_template(chat.messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)  # fmt: skip
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        def generate() -> None:
            with torch.inference_mode():
                model.generate(**ids, max_new_tokens=chat.max_tokens, do_sample=False, streamer=streamer)

        threading.Thread(target=generate, daemon=True).start()

        def events() -> Any:
            for piece in streamer:
                yield f"data: {json.dumps({'choices': [{'delta': {'content': piece}}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    def health() -> str:
        return "ok"

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def load(url: str, requests: int, concurrency: int, count: Any) -> dict[str, float]:
    first: list[float] = []
    tokens: list[int] = []
    remaining = list(range(requests))
    body = {"model": "bench", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}

    async def worker(client: httpx.AsyncClient) -> None:
        while remaining:
            remaining.pop()
            started, text, seen = time.perf_counter(), "", None
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        seen = seen or time.perf_counter() - started
                        text += piece
            first.append(seen or float("nan"))
            tokens.append(count(text))

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "tokens_per_second": sum(tokens) / elapsed,
        "ttft_p50_ms": 1000 * statistics.median(first),
        "ttft_max_ms": 1000 * max(first),
        "tokens_per_request": statistics.mean(tokens),
    }


def measure(name: str, run_dir: Path, count: Any) -> dict[int, dict[str, float]]:
    port = free_port()
    if name == HANDWRITTEN:
        command = [sys.executable, __file__, "--handwritten", str(run_dir), str(port)]
    else:
        command = [sys.executable, "-m", "src.deployment.serve", "--port", str(port), "--model-dir", str(run_dir)]
    env = {key: value for key, value in os.environ.items() if "__" not in key and key != "LIT_SERVER_API_KEY"}
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"{name}: the server exited with {process.returncode} (run {' '.join(command)} to see why)")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            sys.exit(f"{name}: the server did not become healthy")
        asyncio.run(load(url, 2, 1, count))  # warm-up
        results = {level: asyncio.run(load(url, REQUESTS[level], level, count)) for level in REQUESTS}
        for level, numbers in results.items():
            print(f"{name} at {level}: {numbers['tokens_per_second']:.1f} tokens/s, "
                  f"TTFT {numbers['ttft_p50_ms']:.0f} ms", flush=True)  # fmt: skip
        return results
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def serving() -> dict[str, Any]:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        run_dir = make_run(Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(run_dir)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        rounds = []
        for index in range(ROUNDS):
            order = [OURS, HANDWRITTEN] if index % 2 == 0 else [HANDWRITTEN, OURS]
            rounds.append({name: measure(name, run_dir, count) for name in order})
    return {
        name: {level: {key: statistics.median(r[name][level][key] for r in rounds) for key in rounds[0][name][level]}
               for level in REQUESTS}
        for name in (OURS, HANDWRITTEN)
    }  # fmt: skip


def main() -> None:
    load_before = os.getloadavg()
    trained = training()
    served = serving()
    rows = [[mode, numbers["tokens_per_second"], numbers["peak_rss_mib"], numbers["trainable_parameters"],
             numbers["final_loss"]] for mode, numbers in trained.items()]  # fmt: skip
    print(table(rows, ["training", "tokens/s", "peak RSS MiB", "trainable params", "final loss"]))
    rows = [[name, level, numbers["tokens_per_second"], numbers["ttft_p50_ms"], numbers["ttft_max_ms"]]
            for name, levels in served.items() for level, numbers in levels.items()]  # fmt: skip
    print(table(rows, ["server", "concurrency", "tokens/s", "TTFT p50 ms", "TTFT max ms"]))
    path = write("generation", {
        "training": {"steps": TRAIN_STEPS, "model": "the smoke model (2-layer Llama, ~100k parameters)",
                     "modes": trained},
        "serving": {"model": "random Llama, 8 layers, hidden 512 (~25M parameters), LoRA r16 merged",
                    "max_tokens": MAX_TOKENS, "rounds": ROUNDS, "requests": REQUESTS, "servers": served},
        "load_average_before_and_after": [list(load_before), list(os.getloadavg())],
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--train"]:
        train_mode(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--handwritten"]:
        handwritten_app(sys.argv[2], int(sys.argv[3]))
    else:
        main()
