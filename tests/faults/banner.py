#!/usr/bin/env python3
"""A server that speaks first, for tests/faults/run.sh.

usage: banner.py PORT TOKEN

Listens on 127.0.0.1:PORT, accepts one connection, sends the line "BANNER TOKEN\\n" at once (before
reading anything), then echoes back everything it reads until EOF, closes and exits.  Exit status 0
when the connection ended with an orderly EOF, 1 on a socket error.
"""
import socket
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    port, token = int(sys.argv[1]), sys.argv[2]
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1)
    conn, _ = ls.accept()
    ls.close()
    echoed = 0
    try:
        conn.sendall(b"BANNER %s\n" % token.encode())
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            echoed += len(data)
    except OSError as e:
        print("banner.py: %s after echoing %d bytes" % (e, echoed), file=sys.stderr)
        return 1
    conn.close()
    print("echoed %d" % echoed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
