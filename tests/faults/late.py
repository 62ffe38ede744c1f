"""A listener that accepts late, for early data (the client's first bytes go into shared memory
before the listener has accepted; when it does not accept in time they must reach it over TCP).

  late.py server PORT DELAY_MS   listen, print "listening", wait DELAY_MS (a server busy elsewhere),
                                 then accept one connection, read to EOF or to the client's 8-byte
                                 length prefix's worth, answer with the SHA-256 of what came, and
                                 print it
  late.py client PORT SIZE MODE  connect, send an 8-byte length and SIZE random bytes at once, then
                                 MODE "reply": read the server's answer and compare (exit 1 if it
                                 differs); MODE "close": close right away (the server prints what it
                                 got; the test compares it with what the client printed)
"""
import hashlib, os, socket, struct, sys, time


def server(port, delay_ms):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    print("listening", flush=True)
    time.sleep(delay_ms / 1000.0)
    c, _ = ls.accept()
    buf = bytearray()
    want = None
    while want is None or len(buf) < want + 8:
        b = c.recv(65536)
        if not b:
            break
        buf += b
        if want is None and len(buf) >= 8:
            want = struct.unpack("!Q", buf[:8])[0]
    digest = hashlib.sha256(bytes(buf[8:])).hexdigest()
    print("got %d %s" % (len(buf) - 8, digest), flush=True)
    c.sendall(digest.encode())
    c.close()


def client(port, size, mode):
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    print("sent %d %s" % (size, digest), flush=True)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack("!Q", size) + data)
    if mode == "close":
        s.close()
        return
    got = b""
    while len(got) < 64:
        b = s.recv(64 - len(got))
        if not b:
            break
        got += b
    s.close()
    if got.decode() != digest:
        sys.exit("the server got other bytes: %r, sent %s" % (got, digest))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
