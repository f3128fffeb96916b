"""A minimal NBD server for one test: it decides when a WRITE's reply goes out and when its
data is read off the socket, which no real server lets a test choose.

Fixed newstyle with NBD_OPT_GO (NBD_INFO_EXPORT only; every other option is answered
NBD_REP_ERR_UNSUP), simple replies, READ, WRITE, FLUSH and DISC, one export held in memory.
A WRITE at `watch_offset` is served in one of two orders:

- "reply-after-read" (what the protocol asks): read the data, wait `delay_s`, reply.
- "reply-before-read" (a broken server): reply at once, wait until `proceed` is set, then
  read the data. The data stays in the socket after the reply.

What the watched WRITE's data was when the server read it is `received`; `replied_at`
and `read_at` are time.monotonic() stamps. Only for tests (tests/vm/suite.py).
"""

import socket
import struct
import threading
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
INFO_EXPORT = 0
FLAG_HAS_FLAGS = 1
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
FIXED_NEWSTYLE, NO_ZEROES = 1, 2


def _exact(conn, n):
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError("client went away")
        out += chunk
    return bytes(out)


class Server:
    def __init__(self, size, watch_offset, order, delay_s=0.0):
        assert order in ("reply-after-read", "reply-before-read")
        self.data = bytearray(size)
        self.watch_offset, self.order, self.delay_s = watch_offset, order, delay_s
        self.proceed = threading.Event()
        self.watched = threading.Event()     # set once the watched WRITE was read
        self.received = None
        self.replied_at = self.read_at = None
        self.errors = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.spec = f"forward:host=127.0.0.1,port={self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.proceed.set()
        self.sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                if self._negotiate(conn):
                    self._transmit(conn)
        except (EOFError, OSError):
            pass
        except Exception as e:  # a bug of this server: the test reports it
            self.errors.append(repr(e))

    def _negotiate(self, conn):
        conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES))
        _exact(conn, 4)  # the client's flags
        while True:
            magic, opt, length = struct.unpack(">QII", _exact(conn, 16))
            if magic != IHAVEOPT:
                raise EOFError("bad option magic")
            _exact(conn, length)
            if opt != OPT_GO:
                conn.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ERR_UNSUP, 0))
                continue
            info = struct.pack(">HQH", INFO_EXPORT, len(self.data), FLAG_HAS_FLAGS)
            conn.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_INFO, len(info)) + info)
            conn.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            return True

    def _reply(self, conn, handle, error=0, payload=b""):
        conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle) + payload)

    def _transmit(self, conn):
        while True:
            magic, _flags, cmd, handle, off, length = struct.unpack(">IHHQQI", _exact(conn, 28))
            if magic != REQUEST_MAGIC:
                raise EOFError("bad request magic")
            if cmd == CMD_DISC:
                return
            if cmd == CMD_READ:
                self._reply(conn, handle, 0, bytes(self.data[off:off + length]))
            elif cmd == CMD_FLUSH:
                self._reply(conn, handle)
            elif cmd == CMD_WRITE and off == self.watch_offset:
                if self.order == "reply-before-read":
                    self._reply(conn, handle)
                    self.replied_at = time.monotonic()
                    self.proceed.wait(30)
                payload = _exact(conn, length)
                self.read_at = time.monotonic()
                self.received = payload
                self.data[off:off + length] = payload
                if self.order == "reply-after-read":
                    time.sleep(self.delay_s)
                    self.replied_at = time.monotonic()
                    self._reply(conn, handle)
                self.watched.set()
            elif cmd == CMD_WRITE:
                self.data[off:off + length] = _exact(conn, length)
                self._reply(conn, handle)
            else:
                self._reply(conn, handle, 22)  # EINVAL
