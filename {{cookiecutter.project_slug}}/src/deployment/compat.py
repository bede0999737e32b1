"""The LitServe and uvicorn internals the server builds on, and what it does on versions it was not tested with.

pipes.py (PipeServer: pipes instead of LitServe's Manager queues), batching.py (DrainingLoop)
and read_deadline.py (a deadline for request headers) subclass or reach into private parts of
LitServe 0.2.19 and of uvicorn's httptools protocol. pyproject.toml pins LitServe to the tested
release; on another one (a user who lifts the pin), or on an untested uvicorn, the server does
not guess: it serves with LitServe's stock server and loop, or uvicorn's stock protocol, and
says so in one line at start (`notes`). The tests run on the tested versions.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

TESTED_LITSERVE = ("0.2.19",)
TESTED_UVICORN = ("0.35",)  # major.minor


def litserve_tested() -> bool:
    return version("litserve") in TESTED_LITSERVE


def uvicorn_tested() -> bool:
    return ".".join(version("uvicorn").split(".")[:2]) in TESTED_UVICORN


def pipe_server() -> Any:
    """PipeServer (imported only on the LitServe it was written for)."""
    from src.deployment.pipes import PipeServer

    return PipeServer


def batch_loop(batched: bool) -> Any:
    """The worker's loop for a batching API: DrainingLoop where tested, LitServe's own ("auto") elsewhere."""
    if not (batched and litserve_tested()):
        return "auto"
    from src.deployment.batching import DrainingLoop

    return DrainingLoop()


def http_protocol(read_timeout: float) -> dict[str, Any]:
    """`server.run`'s http argument: the header-deadline protocol where uvicorn is tested, else uvicorn's own."""
    if not uvicorn_tested():
        return {}
    from src.deployment.read_deadline import ReadDeadlineProtocol

    ReadDeadlineProtocol.read_timeout = read_timeout  # read in the forked API servers
    return {"http": ReadDeadlineProtocol}


def notes() -> list[str]:
    """One line for each stock part the server falls back to (nothing on the tested versions)."""
    found = []
    if not litserve_tested():
        found.append(
            f"note: LitServe {version('litserve')} is not {' or '.join(TESTED_LITSERVE)}, the release this server's "
            "pipes and batching loop were written for: serving with LitServe's own queues and loop (slower)"
        )
    if not uvicorn_tested():
        found.append(
            f"note: uvicorn {version('uvicorn')} is not {' or '.join(TESTED_UVICORN)}.x: serving without the deadline "
            "for request headers (serving.read_timeout still bounds the body)"
        )
    return found
