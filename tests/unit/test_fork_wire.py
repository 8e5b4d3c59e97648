"""The fork server's wire: a request carries its JSON and the job's output pipe, whatever its
size; the reader takes messages as they come, partial ones included, and says when none came."""

from __future__ import annotations

import os
import socket
import struct

from runner.launcher import fork_wire as wire


def test_a_request_carries_its_message_and_the_output_pipe():
    left, right = socket.socketpair()
    read_end, write_end = os.pipe()
    request = {"argv": ["--output-dir", "x" * 200_000], "env": {"A": "1"}, "cwd": "/"}
    try:
        wire.send(left, request, [write_end])
        got, fd = wire.receive_request(right)
        assert got == request
        os.write(fd, b"job output")
        os.close(fd)
        assert os.read(read_end, 100) == b"job output"
    finally:
        for s in (left, right):
            s.close()
        os.close(read_end)
        os.close(write_end)


def test_the_reader_takes_messages_whole_and_in_order():
    left, right = socket.socketpair()
    try:
        reader = wire.Reader(right)
        assert reader.next(timeout=0.05) is None and not reader.closed  # nothing yet
        for message in ({"pid": 7}, {"exit": 0}):
            wire.send(left, message)
        assert reader.next(timeout=1) == {"pid": 7}
        assert reader.next(timeout=1) == {"exit": 0}
        frame = struct.pack("!I", 12) + b'{"exit": 13}'
        left.sendall(frame[:7])  # half a message: not one yet
        assert reader.next(timeout=0.05) is None and not reader.closed
        left.sendall(frame[7:])
        assert reader.next(timeout=1) == {"exit": 13}
        left.close()
        assert reader.next(timeout=1) is None and reader.closed  # the server went away
    finally:
        right.close()
