"""Render benchmarks/results/*.json as Markdown into README.md (between the markers).

uv run python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def sections() -> list[str]:
    out = []
    if first := load("first_train"):
        seconds = first["seconds"]
        kinds = list(seconds)
        steps = list(seconds[kinds[0]])
        out.append(
            f"**Time to first train** (`benchmarks/first_train.py`, {first['machine']}), seconds:\n\n"
            + markdown_table(["step", *kinds], [[step, *(seconds[kind][step] for kind in kinds)] for step in steps])
        )
    if training := load("training_throughput"):
        rows = [[mode, value] for mode, value in training["samples_per_second"].items()]
        rows += [[f"speed-up: {name}", f"{value:.2f}x"] for name, value in training["speedup"].items()]
        out.append(
            f"**Training throughput** (`benchmarks/training_throughput.py`): {training['model']}, "
            f"{training['samples']} imdb-like reviews (median {training['length_median']:.0f} tokens, "
            f"cut at {training['max_length']}), batch {training['batch_size']}, {training['device']}:\n\n"
            + markdown_table(["mode", "samples/s"], rows)
        )
    if serving := load("serving_throughput"):
        by_round = serving.get("requests_per_second_by_round") or {}
        cpu = "client_cpu_ms_per_request" in next(iter(next(iter(serving["served"].values())).values()))
        rows = [
            [mode, level, r["requests_per_second"], r["p50_ms"], r["p95_ms"], r["p99_ms"]]
            + ([r["client_cpu_ms_per_request"], r["server_cpu_ms_per_request"]] if cpu else [])
            + ([f"{min(by_round[mode][level]):.1f}-{max(by_round[mode][level]):.1f}"] if by_round else [])
            for mode, by_level in serving["served"].items()
            for level, r in by_level.items()
        ]
        header = ["server", "concurrency", "requests/s", "p50 ms", "p95 ms", "p99 ms"]
        header += ["client CPU ms/request", "server CPU ms/request"] if cpu else []
        header += ["requests/s, lowest-highest round"] if by_round else []
        medians = (
            f" Each number is the median of {serving['rounds']} interleaved rounds (every server once per round, the"
            " order rotated by one each round); the last column is the spread of requests/s over the rounds."
            if by_round
            else ""
        )
        ceilings = serving["in_process_ceiling_samples_per_second"]
        if not isinstance(ceilings, dict):  # results from before the int8 option
            ceilings = {"fp32": ceilings}
        ceiling_text = ", ".join(f"{name} {value:.1f}" for name, value in ceilings.items())
        ratios = "; ".join(f"{name}: **{value:.2f}**" for name, value in serving["ratios"].items())
        text = (
            f"**Serving** (`benchmarks/serving_throughput.py`): {serving['model']}, short reviews "
            f"(~{serving['mean_words_per_text']:.0f} words), client and server on the same {serving['machine']}. "
            f"In-process batched ceiling (samples/s): {ceiling_text}. {ratios}.{medians}\n\n"
            + markdown_table(header, rows)
        )
        accuracy = serving.get("int8_accuracy_on_smoke_eval") or {}
        by_runtime = accuracy if "eval_samples" not in accuracy else {"int8": accuracy}  # older results: one
        for name, numbers in by_runtime.items():
            text += (
                f"\n\n{name} against fp32 on the smoke eval split ({numbers['eval_samples']:.0f} reviews, a smoke "
                f"model trained in the same run): accuracy {numbers['accuracy_fp32']:.3f} -> "
                f"{numbers['accuracy_int8']:.3f} ({numbers['accuracy_change_points']:+.1f} points), labels agree "
                f"on {100 * numbers['label_agreement']:.1f}%, largest probability change "
                f"{numbers['max_probability_change']:.3f}."
            )
        if lone := serving.get("lone_requests_interleaved"):
            described = " against ".join(
                f"{name} p50 {numbers['p50_ms']:.2f} ms (p90 {numbers['p90_ms']:.2f})" for name, numbers in lone.items()
            )
            count = next(iter(lone.values()))["requests"]
            text += f"\n\nLone requests, both servers up at once, in alternating blocks ({count} each): {described}."
        if loads := serving.get("load_average_before_and_after"):
            text += f" 1/5/15-minute load average {loads[0]} before, {loads[1]} after."
        if checks := serving.get("targets"):
            target_rows = [[c["target"], c["value"], c["limit"], "met" if c["met"] else "**missed**"] for c in checks]
            text += "\n\n" + markdown_table(["target", "value", "goal", ""], target_rows)
        out.append(text)
    if pants := load("pants_timings"):
        before = pants.get("previous", {}).get("seconds", {})
        rows = [
            [run, value, before.get(run, before.get(run.removesuffix(" (first)"), ""))]
            for run, value in pants["seconds"].items()
        ]
        total = len(pants["test_files"])
        reran = "; ".join(
            f"`{module}`: {', '.join(files) or 'none'}" for module, files in pants["rerun_after_editing"].items()
        )
        earlier = " The Pants rows and the template's suite are kept from the previous full run (`--skip-pants`)."
        load_average = pants.get("load_average_before")
        measured = f" 1/5/15-minute load average {load_average} at the start, {pants['load_average_after']} at the end."
        out.append(
            f"**Inner loop** in a generated project (`benchmarks/pants_timings.py`, {pants['machine']}), seconds"
            f", beside the numbers before the test tiers (`before`).{measured if load_average else ''} "
            f"Test files (of {total}) that re-ran after appending a comment to a module: {reran or 'not measured'}."
            + (earlier if pants.get("pants_numbers_from_an_earlier_run") else "")
            + "\n\n"
            + markdown_table(["run", "seconds", "before"], rows)
        )
    generation = load("generation")
    if generation:
        train = generation["training"]
        modes = train["modes"]
        rows = [
            [mode, numbers["tokens_per_second"], numbers["peak_rss_mib"], numbers["trainable_parameters"],
             numbers["total_parameters"], numbers["final_loss"]]
            for mode, numbers in modes.items()
        ]  # fmt: skip
        lora, full = modes.get("lora"), modes.get("full")
        ratio = f" LoRA / full fine-tuning tokens/s: **{lora['tokens_per_second'] / full['tokens_per_second']:.2f}**." \
            if lora and full else ""  # fmt: skip
        out.append(
            f"**Text-generation training** (`benchmarks/generation.py`, {generation['machine']}): {train['model']}, "
            f"{train['steps']} SFTTrainer steps of the smoke chats, each mode in a fresh process.{ratio}\n\n"
            + markdown_table(["mode", "tokens/s", "peak RSS MiB", "trainable", "parameters", "final loss"], rows)
        )
        serve = generation["serving"]
        rows = [
            [name, level, numbers["tokens_per_second"], numbers["ttft_p50_ms"], numbers["ttft_max_ms"],
             numbers.get("itl_p50_ms", float("nan")), numbers.get("tokens_per_request", float("nan"))]
            for name, levels in serve["servers"].items()
            for level, numbers in levels.items()
        ]  # fmt: skip
        load_average = generation.get("load_average_before_and_after", [[None]])[0]
        out.append(
            f"**Text-generation serving** (`benchmarks/generation.py`, {generation['machine']}): {serve['model']}, "
            f"{serve['max_tokens']} greedy tokens a request, streamed, closed loop; tokens counted on the client; "
            f"median of {serve['rounds']} interleaved rounds; client and servers on the same machine; 1-minute load "
            f"average {load_average[0]:.2f} at the start."
            "\n\n"
            + markdown_table(
                ["server", "clients", "tokens/s", "TTFT p50 ms", "TTFT max ms", "ITL p50 ms", "tokens/request"], rows
            )
        )
        predict, memory = generation.get("predict"), generation.get("memory")
        if predict:
            modes = predict["modes"]
            batched, alone = modes["batched"], modes["one at a time"]
            out.append(
                f"**Text-generation predict**: `uv run predict` on {predict['prompts']} prompts, "
                f"{predict['max_tokens']} tokens each: {batched['wall_s']:.1f} s batched (the default) against "
                f"{alone['wall_s']:.1f} s one at a time (`SERVING__MAX_SEQUENCES=1`), "
                f"**{alone['wall_s'] / batched['wall_s']:.1f}x** for the whole command "
                f"({alone['completing_s'] / batched['completing_s']:.1f}x once the model is loaded)."
            )
        if memory:
            out.append(
                f"**Text-generation server memory**: the HTTP process's resident memory grew by "
                f"**{memory['growth_mib']:.1f} MiB** over {memory['requests']:,} requests after a warm-up "
                f"({memory['rss_mib_after_warm_up']:.0f} -> {memory['rss_mib_after']:.0f} MiB)."
            )
    return out


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    body = "\n\n".join(sections()) or "No results yet: run the scripts in benchmarks/."
    readme.write_text(f"{before}{START}\n{body}\n{END}{after}")
    print(body)


if __name__ == "__main__":
    main()
