"""Serving: the LitServe app (serve.py), its worker's classifier, the start-up check."""

import multiprocessing
import signal

if multiprocessing.current_process().name != "MainProcess":  # set before a spawned child imports
    # A process LitServe spawned (the inference worker) imports this package first. Ctrl-C
    # reaches the whole process group; the `serve` process stops its workers itself, so the
    # worker ignores it from the start (no KeyboardInterrupt traceback while it imports torch).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
