"""Running `boutique observatory` as a real process for tests: start on free ports, read its ports, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ObservatoryProcess:
    """A running observatory and the ports it bound."""

    process: subprocess.Popen[str]
    ports: dict[str, int]
    output: list[str] = field(default_factory=list)

    @property
    def query_url(self) -> str:
        """Base URL of the query API."""
        return f"http://127.0.0.1:{self.ports['query']}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def text(self) -> str:
        """Everything the process printed."""
        return "".join(self.output)


def start_observatory(data_dir: Path, *extra: str, timeout: float = 30.0) -> ObservatoryProcess:
    """Start `boutique observatory` on free ports (unless `extra` names them) and wait for its ready line."""
    command = [sys.executable, "-m", "boutique.cli", "observatory", "--data-dir", str(data_dir)]
    for option in ("--port", "--otlp-grpc-port", "--otlp-http-port", "--zipkin-port"):
        if option not in extra:
            command += [option, "0"]
    process = subprocess.Popen(
        [*command, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = ObservatoryProcess(process, {})
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            if line.startswith("{") and '"observatory ready"' in line:
                ports = json.loads(line).get("ports")
                if ports:
                    running.ports = {
                        "otlp_grpc": ports["otlp_grpc"],
                        "otlp_http": ports["otlp_http"],
                        "zipkin": ports["zipkin"],
                        "query": ports["query"],
                    }
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.is_set() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ready.is_set():
        running.stop()
        time.sleep(0.2)
        raise AssertionError(f"the observatory did not start:\n{running.text()[-3000:]}")
    return running
