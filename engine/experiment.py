"""The experiment: does growth pay, and is the credit true? (`esper-tui experiment`, issue 7)

For each random seed, four arms with the same recipe on one task:
- `host`: the host alone (`--no-autopilot`): the grown run's *seedless twin* (same data order; a seed
  in TRAINING never changes the host, so the twin is exact until the first seed blends in);
- `grown`: the autopilot growing it (with every credit estimator logged side by side);
- `fixed`: the grown run's final architecture trained from scratch (its fossils in place from epoch 0);
- `wide`: the host at twice its width.
Then a report: accuracy mean ± std per arm, parameters, time and multiply-accumulates, each seed's
journey, and the calibration table (credit logged at each decision vs the real gain over the twin).
Every arm is a normal run directory (replayable). Headless; knows nothing of the UI.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from engine.config import RunConfig
from engine.telemetry.runlog import read_events

ARMS = ("host", "grown", "fixed", "wide")
ARM_TITLES = {
    "host": "host alone (the seedless twin)",
    "grown": "grown by the autopilot",
    "fixed": "grown run's final network, from scratch",
    "wide": "host at 2x width",
}
WIDTH_KEY = {"cnn": "width", "transformer": "dim"}
FINAL_EPOCHS = 5  # accuracy is compared over the last 5 epochs (one epoch moves by ±1–2 points)
GAIN_EPOCHS = 3   # the real gain at a decision: mean over the 3 epochs ending at it


@dataclass
class ArmRun:
    """What one arm's run log says, reduced to what the report needs."""

    arm: str
    seed: int
    run_dir: Path
    val_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    credit_seconds: float = 0.0
    params: int = 0
    macs: float = 0.0        # training multiply-accumulates of the model (forward+backward ≈ 3× forward)
    credit_macs: float = 0.0  # of which the shadow twins'
    fossils: dict[str, str] = field(default_factory=dict)
    journey: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0

    @property
    def final_acc(self) -> float:
        tail = self.val_acc[-FINAL_EPOCHS:]
        return sum(tail) / len(tail) if tail else float("nan")

    @property
    def final_loss(self) -> float:
        tail = self.val_loss[-FINAL_EPOCHS:]
        return sum(tail) / len(tail) if tail else float("nan")


def arm_config(base: RunConfig, arm: str, topology: str, width: float, fossils: dict[str, str]) -> RunConfig:
    """The configuration of one arm, derived from the base (grown) configuration."""
    if arm == "grown":
        return base.model_copy(update={"autopilot": True, "credit": base.credit.model_copy(update={"compare": True})})
    if arm == "host":
        return base.model_copy(update={"autopilot": False})
    if arm == "fixed":
        return base.model_copy(update={"autopilot": False, "fossils": dict(fossils)})
    key = WIDTH_KEY[topology]
    wide = int(width * 2)
    return base.model_copy(update={"autopilot": False, "host": {**base.host, key: wide}})


class MacCounter:
    """Forward multiply-accumulates per example of a host with given seeds (torch's FLOP counter)."""

    def __init__(self, config: RunConfig) -> None:
        from engine.tasks import load_task
        from engine.trainer import build_host

        self.config = config
        self.task = load_task(config.task, config.data_dir)
        self._build = lambda cfg: build_host(self.task, cfg)
        self._cache: dict[tuple[tuple[str, str], ...], float] = {}
        x, _ = next(iter(self.task.batches("val", 1)))
        self.example = x

    def _host(self, config: RunConfig, seeds: dict[str, str]) -> torch.nn.Module:
        from engine.seedbank import SeedBank

        host = self._build(config)
        bank = SeedBank(host, config.optim, lambda *a, **k: None)
        for sid, bp in seeds.items():
            bank.graft(sid, bp)
        return host

    def forward_macs(self, config: RunConfig, seeds: dict[str, str]) -> float:
        """MACs of one example's forward pass through `config`'s host with `seeds` running."""
        from torch.utils.flop_counter import FlopCounterMode

        key = (json.dumps(config.host, sort_keys=True), tuple(sorted(seeds.items())))
        if key not in self._cache:
            host = self._host(config, seeds).eval()
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                host(self.example)
            self._cache[key] = counter.get_total_flops() / 2.0  # FLOPs count a MAC as two
        return self._cache[key]

    def params(self, config: RunConfig, seeds: dict[str, str]) -> int:
        return sum(p.numel() for p in self._host(config, seeds).parameters())


def read_arm(arm: str, seed: int, run_dir: Path, macs: MacCounter, config: RunConfig) -> ArmRun:
    """Reduce one arm's log: per-epoch accuracy, the journey, decisions with their credit, MACs."""
    out = ArmRun(arm, seed, run_dir)
    n_train = macs.task.steps_per_epoch(config.batch_size) * config.batch_size
    active: dict[str, str] = dict(config.fossils)  # slot → blueprint of seeds in the forward pass
    twins: set[str] = set()
    last_report: dict[str, dict[str, Any]] = {}
    blended: set[str] = set()     # seed ids that ever entered BLENDING
    for e in read_events(run_dir / "events.jsonl").events:
        kind = e.kind
        if kind == "epoch_completed":
            out.val_acc.append(e.val_accuracy)
            out.val_loss.append(e.val_loss)
            out.seconds += e.epoch_time_s or 0.0
            out.credit_seconds += e.credit_time_s or 0.0
            base = macs.forward_macs(config, dict(config.fossils))
            fwd = macs.forward_macs(config, active)
            out.macs += 3.0 * fwd * n_train
            out.credit_macs += 3.0 * base * n_train * len(twins)
            for r in e.slots:
                last_report[r.slot] = r.model_dump()
        elif kind == "stage_changed":
            sid, target = e.slot, str(e.to_stage)
            if target in ("TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY", "FOSSILIZED"):
                active[sid] = e.blueprint
            else:
                active.pop(sid, None)
            if target == "BLENDING":
                blended.add(e.seed_id)
                twins.add(sid)
            elif target not in ("SHADOWING", "PROBATIONARY"):
                twins.discard(sid)
            if target in ("GERMINATED", "FOSSILIZED", "CULLED"):
                out.journey.append(f"e{e.epoch} {sid} {target.lower()} {e.blueprint}"
                                   + ("" if target == "GERMINATED" else f" ({e.cause})"))
            if target in ("FOSSILIZED", "CULLED") and e.from_stage in ("BLENDING", "SHADOWING", "PROBATIONARY"):
                report = last_report.get(sid, {})
                out.decisions.append({
                    "epoch": e.epoch, "slot": sid, "blueprint": e.blueprint, "to": target,
                    "cause": e.cause, "only_blended": blended == {e.seed_id},
                    "credit": report.get("counterfactual"), "low": report.get("credit_low"),
                    "high": report.get("credit_high"), "method": report.get("credit_method"),
                    "compare": report.get("credit_compare") or {},
                })
            if target == "FOSSILIZED":
                out.fossils[sid] = e.blueprint
        elif kind == "run_failed":
            out.exit_code = 1
    out.fossils = {**config.fossils, **out.fossils}
    out.params = macs.params(config, out.fossils)
    return out


def real_gain(grown: ArmRun, twin: ArmRun, epoch: int) -> float:
    """Mean accuracy difference over the GAIN_EPOCHS epochs ending at `epoch` (1-based)."""
    lo = max(0, epoch - GAIN_EPOCHS)
    pairs = list(zip(grown.val_acc[lo:epoch], twin.val_acc[lo:epoch]))
    return sum(g - t for g, t in pairs) / len(pairs) if pairs else float("nan")


def _mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def run_experiment(
    base: RunConfig,
    seeds: list[int],
    out_dir: Path,
    *,
    arms: tuple[str, ...] = ARMS,
    stream: TextIO = sys.stdout,
    command: str = "",
) -> Path:
    """Run every arm for every seed under `out_dir`, print progress, write `report.md`; return its path."""
    from engine.tasks import load_task
    from engine.trainer import Trainer

    task = load_task(base.task, base.data_dir)  # a bad task fails here, before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    width = float({**task.host_kwargs, **base.host}[WIDTH_KEY[task.topology]])
    macs = MacCounter(base)
    results: dict[tuple[int, str], ArmRun] = {}
    total, done = len(seeds) * len(arms), 0
    started = time.perf_counter()
    for seed in seeds:
        fossils: dict[str, str] = {}
        for arm in ("host", "grown", "fixed", "wide"):
            if arm not in arms:
                continue
            cfg = arm_config(base.model_copy(update={"seed": seed}), arm, task.topology, width, fossils)
            run_dir = out_dir / f"seed{seed}" / arm
            if arm == "fixed" and not fossils:  # nothing grew: the final network is the host itself
                results[(seed, arm)] = results.get((seed, "host")) or read_arm(arm, seed, run_dir, macs, cfg)
                done += 1
                print(f"{_bar(done, total)} seed {seed} {arm:5s} = host (nothing fossilized)", file=stream, flush=True)
                continue
            t0 = time.perf_counter()
            code = Trainer(cfg, run_dir, serve_commands=False).run()
            run = read_arm(arm, seed, run_dir, macs, cfg)
            run.exit_code = code or run.exit_code
            results[(seed, arm)] = run
            if arm == "grown":
                fossils = dict(run.fossils)
            done += 1
            extra = f"  fossils {fossils}" if arm == "grown" else ""
            if run.exit_code:  # its numbers still count up to where it stopped; say so, loudly
                extra += f"  FAILED (exit {run.exit_code}: see {run_dir / 'events.jsonl'})"
            print(f"{_bar(done, total)} seed {seed} {arm:5s} acc {run.final_acc:6.2f}%  loss {run.final_loss:.4f}  "
                  f"{time.perf_counter() - t0:5.1f} s{extra}", file=stream, flush=True)
    report = render_report(base, seeds, arms, results, command, time.perf_counter() - started, task.topology)
    path = out_dir / "report.md"
    path.write_text(report)
    print(report, file=stream, flush=True)
    return path


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def render_report(base: RunConfig, seeds: list[int], arms: tuple[str, ...], results: dict[tuple[int, str], ArmRun],
                  command: str, seconds: float, topology: str) -> str:
    """The markdown report: arms table, gains over the twin, journeys, calibration."""
    lines = [f"# Experiment: {base.task}, {base.epochs} epochs, seeds {', '.join(map(str, seeds))}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Wall time {seconds:.0f} s. Accuracy is the mean of the last {FINAL_EPOCHS} epochs' validation "
              f"accuracy, then mean ± std over seeds. The grown arm runs every credit estimator side by side "
              f"(for the calibration table), so its credit time is that of all three; MACs count the model's "
              f"training passes (3x forward per example), credit MACs the shadow twins' training.", "",
              "| arm | val accuracy % | val loss | parameters | train time s | of which credit s | "
              "train MACs (M) | of which credit |",
              "|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        runs = [results[(s, arm)] for s in seeds if (s, arm) in results]
        if not runs:
            continue
        params = sorted({r.params for r in runs})
        failed = sum(1 for r in runs if r.exit_code)
        lines.append(
            f"| {arm}: {ARM_TITLES[arm]}{f' ({failed} run(s) FAILED)' if failed else ''} | "
            f"{_mean_std([r.final_acc for r in runs])} | "
            f"{_mean_std([r.final_loss for r in runs], 4)} | "
            f"{params[0] if len(params) == 1 else f'{params[0]}–{params[-1]}'} | "
            f"{_mean_std([r.seconds for r in runs])} | {_mean_std([r.credit_seconds for r in runs])} | "
            f"{_mean_std([r.macs / 1e6 for r in runs])} | "
            f"{_mean_std([r.credit_macs / 1e6 for r in runs])} |")
    if "grown" in arms and "host" in arms:
        gains = [results[(s, "grown")].final_acc - results[(s, "host")].final_acc for s in seeds]
        loss_gain = [results[(s, "host")].final_loss - results[(s, "grown")].final_loss for s in seeds]
        lines += ["", f"Grown minus its seedless twin over the last {FINAL_EPOCHS} epochs: "
                  f"**{_mean_std(gains)} points** (per seed: {', '.join(f'{g:+.2f}' for g in gains)}); "
                  f"val loss lower by {_mean_std(loss_gain, 4)} (per seed: {', '.join(f'{g:+.4f}' for g in loss_gain)})."]
        if "fixed" in arms:
            fixed = [results[(s, "grown")].final_acc - results[(s, "fixed")].final_acc for s in seeds]
            lines.append(f"Grown minus the same final network trained from scratch: {_mean_std(fixed)} points.")
        if "wide" in arms:
            wide = [results[(s, "grown")].final_acc - results[(s, "wide")].final_acc for s in seeds]
            lines.append(f"Grown minus the 2x-wide host: {_mean_std(wide)} points.")
    if "grown" in arms:
        lines += ["", "## Journeys (grown arm)", ""]
        for s in seeds:
            run = results[(s, "grown")]
            lines.append(f"- seed {s}: " + ("; ".join(run.journey) if run.journey else "no seed germinated"))
    if "grown" in arms and "host" in arms:
        lines += ["", "## Calibration: credit at each decision vs the real gain over the twin", "",
                  f"Real gain: grown minus twin accuracy, mean of the {GAIN_EPOCHS} epochs ending at the decision. "
                  "Only decisions on seeds that were the only ones to blend so far are exact comparisons "
                  "(after another seed blended, the twin no longer isolates this one).", "",
                  "| seed | epoch | slot | blueprint | decision | credit [interval] (method) | real gain | error | "
                  "other estimators (error) | only seed |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        errors: dict[str, list[float]] = {}
        for s in seeds:
            grown, twin = results[(s, "grown")], results[(s, "host")]
            for d in grown.decisions:
                gain = real_gain(grown, twin, d["epoch"])
                if d["credit"] is None:
                    continue
                err = d["credit"] - gain
                others = []
                for m, (v, _lo, _hi) in sorted(d["compare"].items()):
                    others.append(f"{m} {v:+.2f} ({v - gain:+.2f})")
                    if d["only_blended"]:
                        errors.setdefault(m, []).append(abs(v - gain))
                if d["only_blended"]:
                    errors.setdefault(d["method"], []).append(abs(err))
                lines.append(
                    f"| {s} | {d['epoch']} | {d['slot']} | {d['blueprint']} | {d['to'].lower()} ({d['cause']}) | "
                    f"{d['credit']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] ({d['method']}) | {gain:+.2f} | "
                    f"{err:+.2f} | {'; '.join(others) or '—'} | {'yes' if d['only_blended'] else 'no'} |")
        if errors:
            lines += ["", "Mean absolute error against the real gain (decisions on an only seed): " + "; ".join(
                f"{m} {statistics.fmean(v):.2f} points (n={len(v)}, max {max(v):.2f})" for m, v in sorted(errors.items()))]
    lines.append("")
    return "\n".join(lines)
