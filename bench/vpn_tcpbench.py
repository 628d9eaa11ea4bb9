"""A TCP load tool for ``bench/bench_vpn.py``: standard library only, the same code on the host and in a sandbox.

    python3 vpn_tcpbench.py serve PORT                    listen on 0.0.0.0:PORT; print "ready" once listening
    python3 vpn_tcpbench.py connects HOST PORT COUNT       median ms of COUNT connect + close
    python3 vpn_tcpbench.py client HOST PORT up|down BYTES  one stream of BYTES; prints {"seconds", "MBps"}

A connection of the server starts with one letter and 8 bytes of length: ``U<n>`` (the client sends n bytes,
the server answers ``K`` once it has them all) or ``D<n>`` (the server sends n bytes); a connection that ends at
once (``connects``) is just closed. The bench passes this file's text to ``python3 -c`` inside the sandboxes.
"""

import json
import socket
import statistics
import sys
import threading
import time

CHUNK = 256 * 1024


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = sock.recv(min(CHUNK, size - len(data)))
        if not piece:
            raise ConnectionError(f"the stream ended after {len(data)} of {size} bytes")
        data += piece
    return bytes(data)


def drain(sock: socket.socket, size: int) -> None:
    left = size
    buffer = bytearray(CHUNK)
    while left:
        got = sock.recv_into(buffer, min(CHUNK, left))
        if not got:
            raise ConnectionError(f"the stream ended {left} bytes early")
        left -= got


def pour(sock: socket.socket, size: int) -> None:
    payload = bytes(CHUNK)
    left = size
    while left:
        piece = min(CHUNK, left)
        sock.sendall(payload[:piece])
        left -= piece


def handle(conn: socket.socket) -> None:
    with conn:
        try:
            head = conn.recv(9, socket.MSG_WAITALL)
            if len(head) < 9:
                return
            size = int.from_bytes(head[1:], "big")
            if head[:1] == b"U":
                drain(conn, size)
                conn.sendall(b"K")
            elif head[:1] == b"D":
                pour(conn, size)
        except OSError:
            pass


def serve(port: int) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def connects(host: str, port: int, count: int) -> None:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        sock = socket.create_connection((host, port), timeout=5)
        times.append(time.perf_counter() - began)
        sock.close()
    print(json.dumps({"ms": statistics.median(times) * 1000}))


def client(host: str, port: int, mode: str, size: int) -> None:
    sock = socket.create_connection((host, port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    began = time.perf_counter()
    if mode == "up":
        sock.sendall(b"U" + size.to_bytes(8, "big"))
        pour(sock, size)
        if receive_exactly(sock, 1) != b"K":
            raise ConnectionError("no acknowledgement")
    else:
        sock.sendall(b"D" + size.to_bytes(8, "big"))
        drain(sock, size)
    seconds = time.perf_counter() - began
    sock.close()
    print(json.dumps({"seconds": seconds, "MBps": size / seconds / 1e6}))


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "serve":
        serve(int(rest[0]))
    elif command == "connects":
        connects(rest[0], int(rest[1]), int(rest[2]))
    elif command == "client":
        client(rest[0], int(rest[1]), rest[2], int(rest[3]))
    else:
        sys.exit(f"unknown command {command!r}; see the module docstring")
