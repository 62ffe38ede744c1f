#!/usr/bin/env python3
"""An idle connection whose one end is blocked in recv(), for tests/faults/run.sh.

usage: idle.py server PORT hello|quiet|unread
       idle.py client PORT hello|quiet|unread

server: listens on 127.0.0.1:PORT and accepts one connection.  client: connects to it.
hello:  the client sends "hi\\n" and the server answers "ok\\n" (both ends have used the socket).
quiet:  nothing is exchanged.
unread: as hello, but the client sends "unread\\n" right after "hi\\n", which the server never reads
        (when it is killed, its kernel answers with a reset rather than an orderly end).
Then each prints "ready" and blocks: in recv(), or in a sleep that never touches the socket (a quiet
client, an unread server).  When recv() returns it prints "eof", "reset <error>" or "data" and exits:
0 for eof or reset (the peer is gone), 1 for data.
"""
import socket
import sys
import time


def line(sock):
    got = b""
    while not got.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise ConnectionError("EOF before the end of the line")
        got += b
    return got


def block(sock):
    try:
        data = sock.recv(1)
    except OSError as e:
        print("reset %s" % e, flush=True)
        return 0
    if data:
        print("data %r" % data, flush=True)
        return 1
    print("eof", flush=True)
    return 0


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("server", "client") or sys.argv[3] not in ("hello", "quiet", "unread"):
        sys.exit(__doc__)
    role, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if role == "server":
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(1)
        sock, _ = ls.accept()
        ls.close()
        if mode != "quiet":
            if line(sock) != b"hi\n":
                sys.exit("idle.py: bad greeting")
            sock.sendall(b"ok\n")
        print("ready", flush=True)
        if mode == "unread":
            time.sleep(60)
            return 1
        return block(sock)
    sock = socket.create_connection(("127.0.0.1", port))
    if mode != "quiet":
        sock.sendall(b"hi\nunread\n" if mode == "unread" else b"hi\n")
        if line(sock) != b"ok\n":
            sys.exit("idle.py: bad answer")
        print("ready", flush=True)
        return block(sock)
    print("ready", flush=True)
    time.sleep(60)
    return 1


if __name__ == "__main__":
    sys.exit(main())
