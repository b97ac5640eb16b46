"""The wake socket: a Unix datagram socket in the state directory that tells the daemon "work arrived".

``mssgw send`` and other processes writing into the store ping it after their commit, so the relay starts at
once instead of polling. Losing a ping is harmless: the relay also wakes at the next due time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

WAKE_SOCKET = "wake.sock"


class _WakeProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_wake: Callable[[], None]) -> None:
        self.on_wake = on_wake

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_wake()


async def listen(state_dir: Path, on_wake: Callable[[], None]) -> asyncio.DatagramTransport:
    """Bind the wake socket (replacing a stale one left by a crash)."""
    path = state_dir / WAKE_SOCKET
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _WakeProtocol(on_wake), local_addr=str(path), family=socket.AF_UNIX
    )
    os.chmod(path, 0o660)
    return transport


def ping(state_dir: Path) -> bool:
    """Wake a running daemon; False when none is listening (it will find the work when it starts)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"wake", str(state_dir / WAKE_SOCKET))
        except OSError:
            return False
    return True
