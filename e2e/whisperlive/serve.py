"""Starts the real WhisperLive server (PyPI `whisper-live`) with the flags the operator renders.

The PyPI wheel has no `run_server.py` (the upstream image's CMD), so this launcher stands in for it:
it accepts exactly the flags `builders::captions` renders for the `stt` container, with
run_server.py's names and defaults (collabora/WhisperLive run_server.py, v0.9.0 and later), and passes
them to `TranscriptionServer.run` like run_server.py does. Two differences, both for the test
machine: the WebSocket binds `--host` (127.0.0.1, where run_server.py binds 0.0.0.0), and an
unknown flag exits 2 (argparse), as it does with run_server.py.
"""

import argparse
import sys

from whisper_live.server import TranscriptionServer


def main():
    p = argparse.ArgumentParser(prog="run_server.py")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", "-p", type=int, default=9090)
    p.add_argument("--backend", "-b", default="faster_whisper")
    p.add_argument("--faster_whisper_custom_model_path", "-fw", default=None)
    p.add_argument("--max_clients", type=int, default=4)
    p.add_argument("--max_connection_time", type=int, default=300)
    p.add_argument("--cache_path", "-c", default="~/.cache/whisper-live/")
    p.add_argument("--metrics_port", type=int, default=0)
    p.add_argument("--api_key", default=None)
    a = p.parse_args()
    print(f"whisperlive-real ws={a.host}:{a.port} metrics_port={a.metrics_port}", flush=True)
    TranscriptionServer().run(
        a.host,
        port=a.port,
        backend=a.backend,
        faster_whisper_custom_model_path=a.faster_whisper_custom_model_path,
        single_model=True,
        max_clients=a.max_clients,
        max_connection_time=a.max_connection_time,
        cache_path=a.cache_path,
        metrics_port=a.metrics_port,
        api_key=a.api_key,
    )


if __name__ == "__main__":
    sys.exit(main())
