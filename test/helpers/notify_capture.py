"""Stands in for systemd's notification socket in tests.

Binds an AF_UNIX datagram socket at argv[1], prints "listening" once bound,
then one JSON line per datagram: {"pid": sender pid or null, "text": payload}.
File descriptors passed with a message (SCM_RIGHTS, as sd_pid_notify_with_fds
does) are closed at once so they do not leak. Exits when stdin closes.
"""
import array
import json
import os
import select
import socket
import struct
import sys

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print("listening", flush=True)

while True:
    ready, _, _ = select.select([sock, sys.stdin], [], [])
    if sys.stdin in ready and not sys.stdin.readline():
        break
    if sock not in ready:
        continue
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(64 * 4) + socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    print(json.dumps({"pid": pid, "text": data.decode("utf-8", "replace")}), flush=True)
