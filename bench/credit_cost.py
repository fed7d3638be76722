"""What each credit estimator costs: the default task (digits, seed 3) run once per method, side by side.

Not a test. For every method, over the epochs where a seed is measured: seconds of credit work per
epoch (`epoch_completed.credit_time_s`: twin steps + measuring), its share of those epochs, and the
ratio of those epochs' time to the same run's epochs with no seed running (the host alone). All runs
make the same decisions up to the first blend, so the seed, its stages and its epochs line up.
Usage: python bench/credit_cost.py [seed]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from engine.config import CreditConfig, default_config
from engine.telemetry import read_events
from engine.trainer import Trainer

METHODS = ("ablation", "ablation_bn", "shadow_twin")


def measure(method: str, seed: int, root: Path) -> tuple[float, float, float, int]:
    run_dir = root / method
    Trainer(default_config(seed=seed, credit=CreditConfig(method=method)), run_dir, serve_commands=False).run()
    epochs = [e for e in read_events(run_dir / "events.jsonl").events if e.kind == "epoch_completed"]
    trial = [e for e in epochs if any(r.counterfactual is not None for r in e.slots)]
    plain = [e for e in epochs[3:] if all(str(r.stage) in ("DORMANT", "EMBARGOED") for r in e.slots)]
    credit = statistics.fmean(e.credit_time_s for e in trial)
    epoch = statistics.fmean(e.epoch_time_s for e in trial)
    host = statistics.fmean(e.epoch_time_s for e in plain)
    return credit, epoch, host, len(trial)


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as tmp:
        print(f"digits, seed {seed}, 1 torch thread per engine default; per measured epoch:")
        print(f"{'method':12s} {'credit s':>9s} {'of epoch':>9s} {'epoch / host-only epoch':>24s} {'epochs':>7s}")
        for method in METHODS:
            credit, epoch, host, n = measure(method, seed, Path(tmp))
            print(f"{method:12s} {credit:9.4f} {credit / epoch:9.0%} {epoch / host:24.2f} {n:7d}")


if __name__ == "__main__":
    main()
