"""How fast a long run's log opens: read_events over a generated 10^6-line events.jsonl.

Not a test. Prints lines/s for read_events and, side by side in the same run, for a bare
per-line EVENT_ADAPTER.validate_json loop that keeps nothing (the floor), plus last_seq on the same
file and the cost of one full GC pass while the events are held. Usage: python bench/runlog_read.py [n_lines]
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

from engine.lifecycle import Stage
from engine.telemetry import (
    EVENT_ADAPTER,
    EpochCompleted,
    RunLogWriter,
    SlotReport,
    StepMetrics,
    last_seq,
    read_events,
)

EPOCH_EVERY = 100  # one epoch_completed per 100 lines, like strided step metrics in a real run


def generate(path: Path, n: int) -> None:
    """Write n events: the first few through the real writer, the rest by patching their JSON (fast)."""
    slots = (
        SlotReport(slot="block1", stage=Stage.TRAINING, blueprint="conv_light", seed_id="s1", alpha=0.0,
                   grad_ratio=0.31, grad_ratio_threshold=0.05, params=1234),
        SlotReport(slot="block2", stage=Stage.DORMANT),
    )
    step = StepMetrics(seq=0, time=1.7e9, epoch=1, step=0, loss=0.4123, lr=3e-3, samples_per_s=8123.4)
    epoch = EpochCompleted(seq=0, time=1.7e9, epoch=1, step=0, train_loss=0.41, train_accuracy=88.1,
                           val_loss=0.39, val_accuracy=91.2, epoch_time_s=3.2, samples_per_s=8000.0,
                           slots=slots)
    # Templates with the stamp fields replaced, so each line is a distinct, valid event.
    step_t = step.model_dump_json(by_alias=True).replace('"seq":0', '"seq":{seq}').replace('"step":0', '"step":{seq}')
    epoch_t = epoch.model_dump_json(by_alias=True).replace('"seq":0', '"seq":{seq}').replace('"step":0', '"step":{seq}')
    RunLogWriter(path).close()  # the log created as the engine creates it (owner-only)
    with open(path, "a") as w:  # then plain appends: bypasses model dumping to keep generation quick
        buf = []
        for seq in range(1, n + 1):
            template = epoch_t if seq % EPOCH_EVERY == 0 else step_t
            buf.append(template.replace("{seq}", str(seq)))
            if len(buf) >= 10_000:
                w.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            w.write("\n".join(buf) + "\n")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run" / "events.jsonl"
        generate(path, n)
        size_mb = path.stat().st_size / 1e6

        t0 = time.perf_counter()
        seq = last_seq(path)
        tail = time.perf_counter() - t0
        assert seq == n

        t0 = time.perf_counter()
        with open(path, "rb") as f:
            for line in f:
                EVENT_ADAPTER.validate_json(line)
        bare = time.perf_counter() - t0

        t0 = time.perf_counter()
        log = read_events(path)
        full = time.perf_counter() - t0
        assert len(log.events) == n and not log.problems

        # What holding the events costs the reader's process afterwards: one full GC pass over them.
        t0 = time.perf_counter()
        gc.collect()
        collect = time.perf_counter() - t0

    print(f"{n:,} lines, {size_mb:.0f} MB")
    print(f"bare validate_json loop : {n / bare:>10,.0f} lines/s  ({bare:.2f} s)")
    print(f"read_events             : {n / full:>10,.0f} lines/s  ({full:.2f} s)")
    print(f"last_seq                : {tail * 1e3:.2f} ms")
    print(f"gc.collect() afterwards : {collect * 1e3:.0f} ms with {n:,} events alive")


if __name__ == "__main__":
    main()
