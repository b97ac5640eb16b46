"""``python -m bench profile``: where mssgw's time goes during one relay run, sampled by py-spy.

py-spy (``pip install py-spy`` into the venv) attaches to the running daemon by PID, which needs ptrace
rights over it: root, or ``CAP_SYS_PTRACE``, or ``kernel.yama.ptrace_scope`` at 0. It samples every
non-idle thread (``--gil``: only the thread holding the GIL) 100 times a second while smtp-source sends
and until the sink has every message; the report is the top functions by own samples (the leaf of the
stack) and mssgw's own functions by inclusive samples (anywhere on the stack), as shares of all samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.relay import SIZES, Runs, send
from bench.servers import server
from bench.sink import Sink
from tests.support.pki import Pki

_OURS = re.compile(r"\((gateway|mappers)/")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin")
    if found is None:
        sys.exit(f"py-spy is not installed: {Path(sys.executable).parent}/pip install py-spy")
    return found


def _where(frame: str) -> str:
    found = _FRAME.match(frame)
    return f"{found['function']} ({found['file']})" if found else frame


def top_costs(collapsed: str, top: int) -> str:
    """Own and inclusive shares of the samples in py-spy's raw (collapsed stacks) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_where(frame) for frame in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for where in {f for f in frames if _OURS.search(f)}:
            inclusive[where] += samples
    if total == 0:
        return "no samples (was the daemon idle, or could py-spy not read it?)"
    lines = [f"{total} samples", "", "| own % | function (file) |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | {where} |" for where, n in own.most_common(top)]
    lines += ["", "| inclusive % | mssgw function (file) |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | {where} |" for where, n in inclusive.most_common(top)]
    return "\n".join(lines)


def profile(
    pki: Pki,
    sink: Sink,
    store: str,
    size: str,
    senders: int,
    count: int,
    pg_url: str,
    timeout: float,
    top: int,
    gil: bool = False,
    raw: Path | None = None,
) -> str:
    """Run one relay cell on mssgw under py-spy; the top costs as Markdown tables."""
    py_spy = _py_spy()
    with tempfile.TemporaryDirectory(prefix="mssgw-bench-profile-") as directory:
        output = Path(directory) / "stacks.txt"
        with server(store, pki, sink.port, senders, pg_url) as running:
            command = [
                py_spy,
                "record",
                "--pid",
                str(running.pid),
                "--format",
                "raw",
                "--output",
                str(output),
            ]
            spy = subprocess.Popen(
                [*command, *(["--gil"] if gil else [])],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                before = sink.count()
                error = send(running.port, SIZES[size], senders, count, Runs().next(), timeout)
                arrived = sink.wait_for(before + count, timeout)
            finally:
                spy.send_signal(signal.SIGINT)
                _, complaint = spy.communicate(timeout=60)
        sink.collect(0, 0)
        if not output.exists():
            return f"py-spy could not sample the daemon (ptrace rights?): {complaint.strip()[-500:]}"
        if raw is not None:
            shutil.copyfile(output, raw)
        heading = f"mssgw ({store}) relaying {count} × {size} from {senders} senders"
        if error or arrived is None:
            heading += f" — incomplete run: {error or 'the sink did not get every message'}"
        return f"{heading}\n{top_costs(output.read_text(encoding='utf-8'), top)}"
