"""Several broker addresses for one paho client: the next one after each lost or failed connection.

paho reconnects only to the host it first used. A device (or `edge sim`) in front of a cluster —
every NATS node runs an MQTT gateway — must move on by itself: on each disconnect or failed connect
the client is pointed at the next address, and paho's own backoff then connects there.
"""
from __future__ import annotations


def parse_addresses(text: str, what: str = "--broker") -> list[tuple[str, int]]:
    """'h1:1883,h2:1884' -> [('h1', 1883), ('h2', 1884)]; ValueError naming the bad entry."""
    out = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{what} {item.strip()!r}: expected HOST:PORT (several: HOST:PORT,HOST:PORT)")
        out.append((host, int(port)))
    return out


class Rotation:
    """Installs itself as the client's on_disconnect/on_connect_fail, keeping any handler given."""

    def __init__(self, client, addresses, on_disconnect=None):
        self.client, self.addresses, self.index = client, list(addresses), 0
        self.moves = 0
        self._user_disconnect = on_disconnect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail

    @property
    def current(self) -> tuple[str, int]:
        return self.addresses[self.index]

    def _next(self) -> None:
        if len(self.addresses) < 2:
            return
        self.index = (self.index + 1) % len(self.addresses)
        host, port = self.addresses[self.index]
        # paho refuses the setters while it thinks a socket is open; the socket is gone in these callbacks
        self.client._host, self.client._port = host, port
        self.moves += 1

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self._next()
        if self._user_disconnect is not None:
            self._user_disconnect(client, userdata, flags, reason_code, properties)

    def _on_connect_fail(self, client, userdata):
        self._next()
