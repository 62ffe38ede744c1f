#!/usr/bin/env python3
"""A large send to a receiver that is busy elsewhere, for tests/faults/run.sh.

usage: busy.py server PORT
       busy.py client PORT BYTES

The client opens two connections to the server, tagged by their first byte: "D" (data) and "G"
(go).  It sends BYTES on the data connection in one send() call, then "g" on the go connection.
The server waits for that "g" before it reads anything of the data connection, then reads BYTES
from it and answers "ok <sha256>\\n" on the go connection.

On kernel TCP the send returns as soon as the bytes fit in the socket buffers (about 4 MiB on
loopback here), so a BYTES below that must complete although nobody reads yet.  Under sdx a send
this large lends its buffer to the receiver (SrcAvail); a receiver that never gets to it must not
hold the send up forever.

server prints "listening", then "got <sha256>"; client prints "sent <sha256>" and exits 0 once the
server's answer matches.  Any failure exits 1 with a message.
"""
import hashlib
import os
import socket
import sys


def recv_exact(sock, n):
    parts, got = [], 0
    while got < n:
        b = sock.recv(min(n - got, 1 << 20))
        if not b:
            raise ConnectionError(f"EOF after {got} of {n} bytes")
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def server(port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4)
    print("listening", flush=True)
    conns = {}
    while len(conns) < 2:
        c, _ = ls.accept()
        tag = recv_exact(c, 1)
        conns[tag] = c
    data, go = conns[b"D"], conns[b"G"]
    nbytes = int(recv_exact(go, 12))  # the size, announced first
    if recv_exact(go, 1) != b"g":
        sys.exit("busy.py server: expected 'g'")
    digest = hashlib.sha256(recv_exact(data, nbytes)).hexdigest()
    print(f"got {digest}", flush=True)
    go.sendall(f"ok {digest}\n".encode())
    data.close()
    go.close()


def client(port, nbytes):
    payload = os.urandom(nbytes)
    data = socket.create_connection(("127.0.0.1", port))
    data.sendall(b"D")
    go = socket.create_connection(("127.0.0.1", port))
    go.sendall(b"G" + b"%12d" % nbytes)
    n = data.send(payload)  # one call: the receiver is not reading
    if n != nbytes:
        sys.exit(f"busy.py client: send returned {n} of {nbytes}")
    go.sendall(b"g")
    digest = hashlib.sha256(payload).hexdigest()
    print(f"sent {digest}", flush=True)
    answer = b""
    while not answer.endswith(b"\n"):
        b = go.recv(100)
        if not b:
            sys.exit("busy.py client: EOF before the server's answer")
        answer += b
    if answer.decode().strip() != f"ok {digest}":
        sys.exit(f"busy.py client: the server answered {answer!r}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "server":
        server(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "client":
        client(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
