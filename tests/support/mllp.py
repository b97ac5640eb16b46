"""A producer's side of MLLP for tests: frames written on a real socket, ACKs read back and picked apart.

Plain sockets on purpose (the interop test uses the ``hl7`` library's own client): a test can send bytes
that are not a frame, cut a frame, or keep a connection idle.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass

START, END = b"\x0b", b"\x1c\r"


@dataclass(frozen=True)
class Ack:
    """What a producer reads in an ACK: MSA-1, MSA-2, the ERR-3 code, ERR-4 severity and ERR-8 text."""

    er7: str

    def _field(self, segment: str, number: int) -> str:
        for line in self.er7.split("\r"):
            fields = line.split("|")
            if fields[0] == segment:
                # MSH-1 is the separator itself: MSH fields are numbered one further.
                index = number - 1 if segment == "MSH" else number
                return fields[index] if len(fields) > index else ""
        return ""

    @property
    def code(self) -> str:
        return self._field("MSA", 1)

    @property
    def control_id(self) -> str:
        return self._field("MSA", 2)

    @property
    def error(self) -> int | None:
        value = self._field("ERR", 3).split("^")[0]
        return int(value) if value else None

    @property
    def severity(self) -> str:
        return self._field("ERR", 4)

    @property
    def text(self) -> str:
        return self._field("ERR", 8)

    @property
    def version(self) -> str:
        return self._field("MSH", 12)


class MllpClient:
    """One connection to an MLLP listener."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None, timeout: float = 30.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost") if context is not None else raw
        self.buffer = b""

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, er7: str | bytes) -> Ack:
        """Frame ``er7`` (UTF-8 unless bytes), send it and wait for its ACK."""
        data = er7.encode("utf-8") if isinstance(er7, str) else er7
        self.sock.sendall(START + data + END)
        return self.read_ack()

    def read_ack(self) -> Ack:
        while END not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before an ACK (read {self.buffer!r})")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(END)
        assert frame[:1] == START, frame
        return Ack(frame[1:].decode("utf-8"))

    def closed(self) -> bool:
        """Whether the listener closed the connection (reads its end, failing on anything else)."""
        chunk = self.sock.recv(65536)
        assert chunk == b"", chunk
        return True


def send(port: int, er7: str | bytes, context: ssl.SSLContext | None = None) -> Ack:
    """One message on its own connection."""
    with MllpClient(port, context) as client:
        return client.send(er7)


class _ReusableServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # a restarted endpoint takes its port back at once


class ZamEndpoint:
    """A producer's ZAM endpoint: a real MLLP server on an ephemeral loopback port that keeps every frame it
    gets and answers each with ``answer`` (AA, AE …; None: read it and answer nothing), over TLS when given
    a server ``context`` (a producer taking its ZAM with ``zam_tls``)."""

    def __init__(
        self, port: int = 0, answer: str | None = "AA", context: ssl.SSLContext | None = None
    ) -> None:
        self.answer = answer
        self.context = context
        self.frames: list[str] = []
        self._lock = threading.Lock()
        self.server = _ReusableServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ZamEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[str]:
        with self._lock:
            return list(self.frames)

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        endpoint = self

        class Handler(socketserver.BaseRequestHandler):
            def finish(self) -> None:
                self.request.close()  # a TLS wrapper is its own socket: the server closes the raw one

            def handle(self) -> None:
                buffer = b""
                self.request.settimeout(10)
                if endpoint.context is not None:
                    try:
                        self.request = endpoint.context.wrap_socket(self.request, server_side=True)
                    except OSError:
                        return  # the sender did not trust this endpoint: nothing to read
                while True:
                    try:
                        chunk = self.request.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                    while END in buffer:
                        frame, _, buffer = buffer.partition(END)
                        text = frame.lstrip(START).decode("utf-8")
                        with endpoint._lock:
                            endpoint.frames.append(text)
                        if endpoint.answer is not None:
                            self.request.sendall(START + _ack(text, endpoint.answer).encode() + END)

        return Handler


def _ack(er7: str, code: str) -> str:
    msh = er7.split("\r")[0].split("|")
    trigger = msh[8].split("^")[1] if len(msh) > 8 and "^" in msh[8] else ""
    header = f"MSH|^~\\&|DPI|CHU_X|PFI|CHU_X|20261207083000||ACK^{trigger}^ACK|A{msh[9]}|P|2.6"
    return f"{header}\rMSA|{code}|{msh[9]}\r"
