"""The fork server's wire: length-prefixed JSON messages on a Unix socket, the job's output
pipe passed along with a request (SCM_RIGHTS)."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

# How long a server that is up may take to answer a request before it counts as hung.
ANSWER_TIMEOUT_S = 10.0

def send(conn: socket.socket, message: Mapping[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [frame], fds)
    else:
        conn.sendall(frame)


def receive_request(conn: socket.socket) -> tuple[dict[str, Any], int]:
    chunk, fds, _, _ = socket.recv_fds(conn, 1 << 16, 1)
    if len(fds) != 1:
        raise ValueError("a request comes with one file descriptor, the job's output")
    data = chunk
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise ValueError("the request ended early")
        data += more
    (size,) = struct.unpack("!I", data[:4])
    return json.loads(data[4:4 + size]), fds[0]


class Reader:
    """Messages from the server on one connection, without blocking unless asked to."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buffer, self.closed = conn, b"", False

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message; None if none came within `timeout` (0: do not wait) or the server
        closed the connection (then `closed`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack("!I", self.buffer[:4])
                if len(self.buffer) >= 4 + size:
                    message = json.loads(self.buffer[4:4 + size])
                    self.buffer = self.buffer[4 + size:]
                    return message
            if self.closed:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.conn.settimeout(left)
            try:
                data = self.conn.recv(1 << 16)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError:
                data = b""
            self.buffer += data
            if not data:
                self.closed = True
