"""systemd's notify protocol with the stdlib: one datagram per message to $NOTIFY_SOCKET.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op that returns False. A leading "@" names
a socket in the abstract namespace.
"""
from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ=os.environ):
        addr = environ.get("NOTIFY_SOCKET", "")
        self.addr = ("\0" + addr[1:]) if addr.startswith("@") else addr
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # ping at half the timeout, as sd_watchdog_enabled(3) advises
        self.watchdog_interval_s = int(usec) / 2e6 if wanted else None
        self._last_ping = 0.0

    def notify(self, message: str) -> bool:
        if not self.addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.addr)
                s.sendall(message.encode())
        except OSError:            # systemd gone or socket unwritable: nothing to tell, nothing to crash for
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> bool:
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self, now: float) -> bool:
        """Ping if the watchdog is on and half its timeout has passed since the last ping.
        Called from the worker loop only, so a stuck worker stops the pings."""
        if self.watchdog_interval_s is None or now - self._last_ping < self.watchdog_interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")
