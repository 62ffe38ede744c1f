"""Connection churn: one connection per request, as HTTP/1.0 clients and health checks do.

  churn.py server PORT N         echo server: one process, nonblocking, closes on EOF; exits
                                 after N connections (0: runs until SIGTERM; bench/apps.sh uses it)
  churn.py client PORT N SEED    N times: connect, send a random amount (1 B..64 KiB), read the
                                 echo back, compare, close.  Exit 0 only if every byte matched.
"""
import hashlib, random, selectors, signal, socket, sys


def server(port, n):
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(512)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ)
    pending = {}  # socket -> bytes still to echo
    while True:
        for key, ev in sel.select():
            s = key.fileobj
            if s is ls:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                pending[c] = b""
                sel.register(c, selectors.EVENT_READ)
                continue
            if ev & selectors.EVENT_READ:
                try:
                    b = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    b = b""
                if not b:
                    sel.unregister(s)
                    del pending[s]
                    s.close()
                    n -= 1
                    if n == 0:
                        return
                    continue
                pending[s] += b
            if pending.get(s):
                try:
                    sent = s.send(pending[s])
                    pending[s] = pending[s][sent:]
                except (BlockingIOError, InterruptedError):
                    pass
                sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending[s] else 0))


def client(port, n, seed):
    rng = random.Random(seed)
    for i in range(n):
        size = rng.randint(1, 65536)
        data = rng.randbytes(size)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(data)
        got = bytearray()
        while len(got) < size:
            b = s.recv(65536)
            if not b:
                sys.exit("connection %d: EOF after %d of %d bytes" % (i, len(got), size))
            got += b
        s.close()
        if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
            sys.exit("connection %d: the echo of %d bytes differs" % (i, size))
    print("ok %d connections" % n)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
