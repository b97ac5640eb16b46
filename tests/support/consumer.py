"""An HL7 consumer (the hospital's DPI) for tests: a real asyncio MLLP server (TLS with a ``context``) on an
ephemeral loopback port, in its own thread so that both in-process tests and tests of a running mssgw can
use it.

It keeps every MDM it gets and answers each with the next of its ``answers`` (the last one repeats):
``"AA"``, ``"AE 902"`` (application error: ERR-3 207, ERR-5 902), ``"AR 207"`` (ERR-3 only), ``"AR"`` (no ERR)
or ``None`` (reads the MDM and answers nothing). The ACKs are written here from the volet's profile.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Sequence

START, END = b"\x0b", b"\x1c\r"
_LABELS = {902: "Identifiant patient inconnu", 904: "INS different", 207: "Application error"}


def ack_for(mdm: str, answer: str) -> str:
    """The consumer's ACK to ``mdm`` (ER7) for an ``answer`` such as ``AE 902``."""
    msh = mdm.split("\r")[0].split("|")
    code, _, number = answer.partition(" ")
    lines = [
        f"MSH|^~\\&|{msh[4]}|{msh[5]}|{msh[2]}|{msh[3]}|20261207083000||ACK^{msh[8].split('^')[1]}^ACK|"
        f"ACK{msh[9]}|P|2.6",
        f"MSA|{code}|{msh[9]}",
    ]
    if number == "207" or (number and int(number) < 900):
        lines.append(f"ERR|||{number}^{_LABELS.get(int(number), 'Error')}^HL70357|E")
    elif number:
        label = _LABELS.get(int(number), "Erreur")
        lines.append(f"ERR|||207^Application error^HL70357|E|{number}^{label}^applicationErrorCondition")
    return "\r".join(lines) + "\r"


class Consumer:
    """``with Consumer(["AE 902"]) as dpi: ...``; ``dpi.received()`` are the MDMs in order of arrival."""

    def __init__(
        self, answers: Sequence[str | None] = ("AA",), port: int = 0, context: ssl.SSLContext | None = None
    ) -> None:
        self.answers = list(answers)
        self.context = context
        self.frames: list[str] = []
        self.port = port
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Consumer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def received(self) -> list[str]:
        with self._lock:
            return list(self.frames)

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, ssl=self.context
        )

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:  # a silent consumer still holds its connections
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                frame = await reader.readuntil(END)
                text = frame[:-2].lstrip(START).decode("utf-8")
                with self._lock:
                    self.frames.append(text)
                    answer = self.answers[min(len(self.frames), len(self.answers)) - 1]
                if answer is not None:
                    writer.write(START + ack_for(text, answer).encode("utf-8") + END)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)
