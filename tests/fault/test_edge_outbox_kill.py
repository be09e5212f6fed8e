"""kill -9 while writing: every sample the outbox reported committed is there after reopening."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from taktline_edge.outbox import Outbox

WRITER = r"""
import sys
from datetime import UTC, datetime
from taktline_contract.sparkplug import DataType
from taktline_edge.outbox import Outbox, Sample

outbox = Outbox(sys.argv[1])
n = 0
while True:
    batch = [
        Sample("M1", "Production/GoodCount", datetime.now(UTC), n + i, DataType.UINT32)
        for i in range(5)
    ]
    ids = outbox.append(batch)
    n += 5
    # Reported only after append returned, i.e. after COMMIT.
    print(ids[-1], n - 1, flush=True)
"""


def test_committed_samples_survive_sigkill_in_order(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    reported: list[tuple[int, int]] = []
    try:
        while len(reported) < 200:
            line = process.stdout.readline()
            assert line, f"writer died: {process.stderr.read() if process.stderr else ''}"
            row_id, value = line.split()
            reported.append((int(row_id), int(value)))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # Lines the writer printed before it died were committed too.
        for line in process.stdout.read().splitlines():
            if len(line.split()) == 2:
                row_id, value = line.split()
                reported.append((int(row_id), int(value)))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    with Outbox(path) as outbox:
        rows = outbox.oldest(1_000_000)
    values = [r.sample.value for r in rows]
    stored = {r.id: r.sample.value for r in rows}
    last_value = reported[-1][1]
    # Every reported row is there with its value; order is the append order.
    assert all(stored.get(row_id) == value for row_id, value in reported)
    assert values[: last_value + 1] == list(range(last_value + 1))
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    # Whatever the kill interrupted is either wholly there (committed) or wholly absent.
    assert len(values) % 5 == 0
