"""Serving: the LitServe server process (serve.py) and what it is built on: the request guard, pipes, loops."""

import multiprocessing
import signal

if multiprocessing.current_process().name != "MainProcess":  # set before a spawned child imports
    # A process LitServe spawned (the inference worker) imports this package first. Ctrl-C
    # reaches the whole process group; the `serve` process stops its workers itself, so the
    # worker ignores it from the start (no KeyboardInterrupt traceback while it imports torch).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
