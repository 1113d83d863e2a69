"""A real mosquitto on 127.0.0.1 for the daemon tests and the benchmark: a config written to a temp
folder, a free port, persistence on, stated queue limits, stop/start for outage tests.

The database is written when the broker stops (SIGTERM), not periodically: an autosave every
second rewrote a backlog of 100k queued messages each time and stalled delivery for seconds."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)

# The limits the tests rely on, stated rather than inherited: the stock 20 in flight / 1000 queued
# per client silently dropped 46 % of QoS 1 to a slow subscriber (docs/daemon.md, "guarantees").
LIMITS = {
    "max_inflight_messages": 1000,
    "max_queued_messages": 100000,
    "max_queued_bytes": 0,          # no byte cap: the message cap above is the bound
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, folder: Path, port: int | None = None, limits: dict | None = LIMITS):
        """limits: the queue limits to state; None keeps mosquitto's stock ones (20 in flight, 1000 queued)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        # started as root, mosquitto switches to the user named here (default "mosquitto", which cannot write
        # to our folder: persistence and the log would fail silently); as another user the line is ignored
        lines = [f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                 f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {self.folder}/", "set_tcp_nodelay true",
                 f"log_dest file {self.log}", "log_type error", "log_type warning",
                 *(f"{k} {v}" for k, v in (limits or {}).items())]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self, timeout_s: float = 10.0) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not accept on 127.0.0.1:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file on the way out (sessions, queued QoS 1)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
