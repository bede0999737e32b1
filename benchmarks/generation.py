"""The text-generation task: LoRA against full fine-tuning, and chat serving under load against hand-written apps.

Run from a project generated with task=text-generation, with its interpreter:
    cd <project> && .venv/bin/python <template>/benchmarks/generation.py [--skip-training]
Training: the smoke model and chats (src/task/smoke.py) through TRL's SFTTrainer as
src/task/training.py builds it, with the smoke run's LoRA config and without it (full
fine-tuning), TRAIN_STEPS steps each in a fresh process: tokens/s over the training steps (TRL's
own token count / the Trainer's train_runtime), the process's peak resident memory, parameters.
Serving: a Llama-shaped model of ~25M parameters with random weights (nothing can be downloaded
here; the time per token depends on the shapes, not on the values; its output layer tilted
towards word-starting tokens so the text streams word by word) and a LoRA adapter on it,
published as a run folder. Three servers, the same merged model, the same client:
  - ours: `python -m src serve` (what `uv run serve` execs: LitServe, the continuous-batching engine);
  - hand-written FastAPI + TextIteratorStreamer: model.generate in a thread per request;
  - hand-written FastAPI on transformers' own continuous batching (`model.init_continuous_batching()`,
    a request per `add_request(..., streaming=True)`, no LitServe), with a CPU-sized config.
Each request asks for MAX_TOKENS tokens (min_tokens in the hand-written apps; ours has no
end-of-turn token in a random model's vocabulary reach), greedy, streamed; tokens are counted on the
client by tokenizing the streamed text (the same rule for every server). At concurrency 1, 8 and
32 (closed loop), ROUNDS interleaved rounds (the servers' order rotated each round), medians:
total tokens/s, time to first token p50 and max, inter-token latency p50 (the gaps between
streamed chunks, per token). Then `uv run predict` on 64 prompts against the same prompts one at
a time (MAX_SEQUENCES=1), and the HTTP process's resident memory over MEMORY_REQUESTS requests to
ours. Writes benchmarks/results/generation.json; the README quotes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
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

if not (Path.cwd() / "src" / "task" / "engine.py").is_file():
    sys.exit("run this from a project generated with task=text-generation (it imports the project's src/)")
sys.path.insert(0, str(Path.cwd()))

TRAIN_STEPS = 60
MAX_TOKENS = 48
ROUNDS = 2
LEVELS = {1: 6, 8: 24, 32: 64}  # concurrency -> requests per measurement (closed loop)
PREDICT_PROMPTS = 64
MEMORY_REQUESTS = 10_000
PROMPT = [{"role": "user", "content": "What is the opposite of early? Answer in one sentence."}]
OURS = "ours: uv run serve (LitServe, continuous batching)"
STREAMER = "hand-written FastAPI + TextIteratorStreamer"
TRANSFORMERS_CB = "hand-written FastAPI + transformers continuous batching"
SERVERS = (OURS, STREAMER, TRANSFORMERS_CB)


def train_mode(mode: str, output_dir: str) -> None:
    """One training mode in this (fresh) process; prints its numbers as JSON."""
    from src import smoke_assets
    from src.config import DEFAULT_SETTINGS_FILE, SMOKE_SETTINGS_FILE, load_settings
    from src.models import distributed
    from src.task import TASK, training
    from src.task.data import load_splits
    from trl.trainer.sft_trainer import SFTTrainer

    assets = smoke_assets.build(Path(output_dir) / "assets", 42, TASK.smoke)
    overrides = smoke_assets.overrides(assets)
    overrides["training"] = {"output_dir": output_dir, "max_steps": TRAIN_STEPS, "eval_steps": None,
                             "save_steps": 10_000, "logging_steps": 10}  # fmt: skip
    if mode == "full":
        overrides["training"]["learning_rate"] = 1e-3
    settings = load_settings(DEFAULT_SETTINGS_FILE, environ={}, overlays=[SMOKE_SETTINGS_FILE], overrides=overrides)
    distributed.start(settings.training.seed)  # the state train_model.train() sets up first
    tokenizer, model = training._load_model(settings)
    trainer = SFTTrainer(
        model=model, args=training.sft_config(settings, Path(output_dir) / "checkpoints"),
        train_dataset=load_splits(settings.data)["train"], processing_class=tokenizer,
        peft_config=training.lora_config(settings) if mode == "lora" else None,
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
    from src import smoke_assets
    from src.task import TASK
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    assets = smoke_assets.build(target / "assets", 42, TASK.smoke)
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
        # "Ġ..."), so the text streams word by word as a trained model's does, and away from the
        # end-of-turn token, so every server decodes MAX_TOKENS; the cost per token stays.
        encoded = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)  # fmt: skip
        hidden = base.model(**encoded).last_hidden_state[0]
        direction = hidden.mean(dim=0) / hidden.mean(dim=0).norm()
        words = [index for token, index in tokenizer.get_vocab().items() if token.startswith("Ġ")]
        base.lm_head.weight[words] += 2.0 * direction
        base.lm_head.weight[tokenizer.eos_token_id] -= 4.0 * direction
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
    """The hand-written apps' request: at module level, where FastAPI can resolve the annotation."""

    messages: list[dict[str, str]]
    max_tokens: int = 64


def _merged(run_dir: str) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((Path(run_dir) / "run.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(info["base_model"]), run_dir)
    return tokenizer, model.merge_and_unload().eval()


def _sse(piece: str) -> str:
    return f"data: {json.dumps({'choices': [{'delta': {'content': piece}}]})}\n\n"


def _run(app: Any, port: int) -> None:
    """Serve a hand-written app with the /health route the benchmark waits on."""
    import uvicorn

    @app.get("/health")
    def health() -> str:
        return "ok"

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def streamer_app(run_dir: str, port: int) -> None:
    """What users write by hand: the merged model, generate() in a thread per request, SSE chunks."""
    import threading

    import torch
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import TextIteratorStreamer

    tokenizer, model = _merged(run_dir)
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def complete(chat: Chat) -> StreamingResponse:
        ids = tokenizer.apply_chat_template(chat.messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)  # fmt: skip
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        def generate() -> None:
            with torch.inference_mode():
                model.generate(**ids, max_new_tokens=chat.max_tokens, min_new_tokens=chat.max_tokens,
                               do_sample=False, streamer=streamer)  # fmt: skip

        threading.Thread(target=generate, daemon=True).start()

        def events() -> Any:
            for piece in streamer:
                yield _sse(piece)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    _run(app, port)


def transformers_cb_app(run_dir: str, port: int) -> None:
    """What users write on transformers' own continuous batching: the manager, a request per add_request."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    tokenizer, model = _merged(run_dir)
    generation = GenerationConfig(max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=-1,
                                  pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    # Sized for a CPU (the defaults size the cache from GPU memory and took 12.5 s for 8 x 32 tokens here).
    batching = ContinuousBatchingConfig(block_size=32, num_blocks=256, max_batch_tokens=512, max_requests_per_batch=32)
    manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=batching)
    manager.start()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(chat: Chat) -> StreamingResponse:
        ids = tokenizer.apply_chat_template(chat.messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]  # fmt: skip
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        request_id = manager.add_request(list(ids), max_new_tokens=chat.max_tokens, streaming=True)
        manager.register_result_handler(request_id, outputs.put_nowait)

        async def events() -> Any:
            sent = 0
            while True:
                output = await outputs.get()
                text = tokenizer.decode(output.generated_tokens, skip_special_tokens=True)
                if len(text) > sent:
                    yield _sse(text[sent:])
                    sent = len(text)
                if output.is_finished():
                    break
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    _run(app, port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def load(url: str, requests: int, concurrency: int, count: Any) -> dict[str, float]:
    """`requests` streamed requests from `concurrency` clients (closed loop): tokens/s, TTFT, inter-token latency."""
    first: list[float] = []
    gaps: list[float] = []
    tokens: list[int] = []
    remaining = list(range(requests))
    body = {"model": "bench", "messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}

    async def client_loop(client: httpx.AsyncClient) -> None:
        while remaining:
            remaining.pop()
            started, text, seen, last = time.perf_counter(), "", None, None
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        now = time.perf_counter()
                        if seen is None:
                            seen = now - started
                        elif last is not None:
                            gaps.append((now - last) / max(1, count(piece)))
                        last = now
                        text += piece
            first.append(seen or float("nan"))
            tokens.append(count(text))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "tokens_per_second": sum(tokens) / elapsed,
        "ttft_p50_ms": 1000 * statistics.median(first),
        "ttft_max_ms": 1000 * max(first),
        "itl_p50_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
        "tokens_per_request": statistics.mean(tokens),
    }


def start(name: str, run_dir: Path, port: int) -> subprocess.Popen[bytes]:
    if name == STREAMER:
        command = [sys.executable, __file__, "--streamer", str(run_dir), str(port)]
    elif name == TRANSFORMERS_CB:
        command = [sys.executable, __file__, "--transformers-cb", str(run_dir), str(port)]
    else:
        command = [sys.executable, "-m", "src", "serve", "--port", str(port), "--model-dir", str(run_dir)]
    env = {key: value for key, value in os.environ.items() if "__" not in key and key != "LIT_SERVER_API_KEY"}
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{name}: the server exited with {process.returncode} (run {' '.join(command)} to see why)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    sys.exit(f"{name}: the server did not become healthy")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def measure(name: str, run_dir: Path, count: Any) -> dict[int, dict[str, float]]:
    port = free_port()
    process = start(name, run_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(load(url, 4, 2, count))  # warm-up
        results = {level: asyncio.run(load(url, requests, level, count)) for level, requests in LEVELS.items()}
        for level, numbers in results.items():
            print(f"{name} at {level}: {numbers['tokens_per_second']:.1f} tokens/s, TTFT p50 "
                  f"{numbers['ttft_p50_ms']:.0f} ms, max {numbers['ttft_max_ms']:.0f} ms", flush=True)  # fmt: skip
        return results
    finally:
        stop(process)


def serving(run_dir: Path, count: Any) -> dict[str, Any]:
    rounds = []
    for index in range(ROUNDS):
        order = SERVERS[index % len(SERVERS) :] + SERVERS[: index % len(SERVERS)]
        rounds.append({name: measure(name, run_dir, count) for name in order})
    return {
        name: {level: {key: statistics.median(r[name][level][key] for r in rounds) for key in rounds[0][name][level]}
               for level in LEVELS}
        for name in SERVERS
    }  # fmt: skip


def predicting(run_dir: Path, scratch: Path) -> dict[str, Any]:
    """`uv run predict` on PREDICT_PROMPTS prompts, batched (the default) and one at a time, interleaved."""
    questions = [f"What is the opposite of {word}? Answer in one sentence." for word in
                 ("hot", "big", "fast", "up", "light", "happy", "early", "open")]  # fmt: skip
    prompts = scratch / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": questions[index % len(questions)]}) + "\n"
                               for index in range(PREDICT_PROMPTS)))  # fmt: skip
    found: dict[str, list[dict[str, float]]] = {"batched": [], "one at a time": []}
    for _ in range(ROUNDS):
        for mode, sequences in (("batched", "auto"), ("one at a time", "1")):
            env = {**{key: value for key, value in os.environ.items() if "__" not in key},
                   "SERVING__MAX_SEQUENCES": sequences}  # fmt: skip
            command = [sys.executable, "-m", "src", "predict", str(prompts), "-o", str(scratch / "out.jsonl"),
                       "--force", "--model-dir", str(run_dir), "--max-tokens", str(MAX_TOKENS)]  # fmt: skip
            started = time.perf_counter()
            process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            completing = None
            for line in process.stderr or ():
                if completing is None and line.startswith("Completing "):
                    completing = time.perf_counter()
            if process.wait() != 0:
                sys.exit(f"predict ({mode}) failed")
            ended = time.perf_counter()
            found[mode].append({"wall_s": ended - started, "completing_s": ended - (completing or started)})
            print(f"predict {mode}: {ended - started:.1f} s", flush=True)
    return {mode: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for mode, runs in found.items()}


def http_process(server: subprocess.Popen[bytes], port: int) -> int:
    """The pid of ours' process that answers HTTP (LitServe's API server): the child holding the listening port's
    connections (the one that accepted ours)."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.recv(100)
        mine = connection.getsockname()[1]
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
            if local == port and remote == mine:
                inodes.add(f"socket:[{fields[9]}]")
        for fd in Path("/proc").glob("[0-9]*/fd/*"):
            try:
                if str(fd.readlink()) in inodes:
                    return int(fd.parts[2])
            except OSError:
                continue
    sys.exit("no process holds the connection")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(run_dir: Path) -> dict[str, float]:
    """Ours' HTTP process's resident memory after a warm-up and after MEMORY_REQUESTS more short requests."""
    port = free_port()
    process = start(OURS, run_dir, port)
    body = {"model": "bench", "messages": PROMPT, "max_tokens": 1, "temperature": 0}

    async def requests(count: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            remaining = list(range(count))

            async def client_loop() -> None:
                while remaining:
                    remaining.pop()
                    (await client.post("/v1/chat/completions", json=body)).raise_for_status()

            await asyncio.gather(*(client_loop() for _ in range(8)))

    try:
        http = http_process(process, port)
        asyncio.run(requests(500))
        before = rss_mib(http)
        started = time.perf_counter()
        asyncio.run(requests(MEMORY_REQUESTS))
        return {"requests": MEMORY_REQUESTS, "rss_mib_after_warm_up": before, "rss_mib_after": rss_mib(http),
                "growth_mib": rss_mib(http) - before, "seconds": time.perf_counter() - started}  # fmt: skip
    finally:
        stop(process)


def main() -> None:
    from transformers import AutoTokenizer

    load_before = os.getloadavg()
    trained = {} if "--skip-training" in sys.argv else training()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        run_dir = make_run(Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(run_dir)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        served = serving(run_dir, count)
        predicted = predicting(run_dir, Path(scratch))
        held = memory(run_dir)
    if trained:
        rows = [[mode, numbers["tokens_per_second"], numbers["peak_rss_mib"], numbers["trainable_parameters"],
                 numbers["final_loss"]] for mode, numbers in trained.items()]  # fmt: skip
        print(table(rows, ["training", "tokens/s", "peak RSS MiB", "trainable params", "final loss"]))
    rows = [
        [
            name,
            level,
            numbers["tokens_per_second"],
            numbers["ttft_p50_ms"],
            numbers["ttft_max_ms"],
            numbers["itl_p50_ms"],
        ]
        for name, levels in served.items()
        for level, numbers in levels.items()
    ]
    print(table(rows, ["server", "concurrency", "tokens/s", "TTFT p50 ms", "TTFT max ms", "ITL p50 ms"]))
    print(json.dumps({"predict": predicted, "memory": held}, indent=1))
    previous = json.loads((Path(__file__).parent / "results" / "generation.json").read_text()) if not trained else {}
    path = write("generation", {
        "training": {"steps": TRAIN_STEPS, "model": "the smoke model (2-layer Llama, ~100k parameters)",
                     "modes": trained} if trained else previous.get("training"),
        "serving": {"model": "random Llama, 8 layers, hidden 512 (~25M parameters), LoRA r16 merged",
                    "max_tokens": MAX_TOKENS, "rounds": ROUNDS, "requests": LEVELS, "servers": served},
        "predict": {"prompts": PREDICT_PROMPTS, "max_tokens": MAX_TOKENS, "modes": predicted},
        "memory": held,
        "load_average_before_and_after": [list(load_before), list(os.getloadavg())],
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--train"]:
        train_mode(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--streamer"]:
        streamer_app(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--transformers-cb"]:
        transformers_cb_app(sys.argv[2], int(sys.argv[3]))
    else:
        main()
