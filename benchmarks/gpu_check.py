"""`make gpu-check`: the GPU path measured in one run, on one CUDA GPU with no network, in under 8 minutes.

Phases, each with its own time limit inside one overall budget (the elapsed time of each is printed; a phase
that runs out of time or fails stops the run with exit 1 and says which; nothing waits without a bound):

  bootstrap         versions of Python, torch, CUDA, numpy; the pinned packages from .gpu-wheels/ when the
                    machine lacks them (benchmarks/gpu_bootstrap.py)
  build             random-weight checkpoints at the real sizes of Ministral-3-3B and Qwen2-VL-7B, in bf16,
                    initialised on the GPU (services/model_builder/real_size.py); kept for the next run
  stack start       `proxyvision serve --device cuda` (the real launcher: text engine, vision engine, gateway)
  text: proxyvision tok/s and TTFT at 1, 16 and 64 concurrent streams (benchmarks/load.py, the openai SDK)
  captions          caption latency for 1 and 4 images, a cached repeat, a one-image chat's TTFT split
  idle unload       each engine's GPU memory loaded, then after its idle unload (must drop to near zero)
  transformers serve start / text: transformers serve
                    `transformers serve --continuous-batching --device cuda --dtype bfloat16` on the same
                    text model and KV cache size, the same load

    python -m benchmarks.gpu_check --device cuda                    # make gpu-check
    python -m benchmarks.gpu_check --device cpu --small --out x.json  # the same on the stand-ins' sizes

Everything but the standard library is imported after the bootstrap. The hub is offline throughout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from .gpu_bootstrap import REPO_ROOT, BootstrapError, ensure_packages, pinned_requirements

STARTED_ENV = "PROXYVISION_GPU_CHECK_STARTED"  # time.time() of the first start, across the bootstrap's re-run
WATCHDOG_GRACE = 60.0  # s past the budget before the watchdog kills everything (cleanup gets that long)
REAL_SIZE_DISK_GB = 40  # the three real-size checkpoints take ~32 GB


class PhaseTimeout(Exception):
    """A phase ran past its limit."""


class Phases:
    """Runs named phases under SIGALRM limits inside one deadline, and records how long each took."""

    def __init__(self, budget: float, limits: dict[str, float]) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.limits = limits
        self.records: dict[str, dict] = {}
        signal.signal(signal.SIGALRM, self._expired)
        self._current = ""

    def _expired(self, signum, frame) -> None:
        raise PhaseTimeout(f"phase '{self._current}' ran past its limit of {self.records[self._current]['limit_s']} s")

    @contextlib.contextmanager
    def __call__(self, name: str):
        left = self.deadline - time.monotonic()
        limit = round(min(self.limits.get(name, 60.0), left), 1)
        if limit <= 1:
            raise PhaseTimeout(f"no time left in the budget for phase '{name}'")
        self._current = name
        self.records[name] = {"limit_s": limit, "ok": False}
        print(f"\n== {name} (limit {limit:.0f} s, {self.elapsed():.0f} s elapsed)", flush=True)
        began = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield
            self.records[name]["ok"] = True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.records[name]["seconds"] = round(time.monotonic() - began, 1)
            print(f"== {name}: {self.records[name]['seconds']:.1f} s", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _watchdog(budget: float) -> None:
    """Last resort if cleanup itself hangs: kill every process the check started, exit 3."""

    def fire() -> None:
        print(f"\nwatchdog: still running {WATCHDOG_GRACE:.0f} s past the {budget:.0f} s budget; killing", flush=True)
        stack = sys.modules.get("benchmarks.gpu_stack")
        if stack is not None:
            stack.kill_started()
        os._exit(3)

    timer = threading.Timer(budget + WATCHDOG_GRACE, fire)
    timer.daemon = True
    timer.start()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--small", action="store_true", help="the tiny stand-ins' sizes and the CPU settings")
    parser.add_argument("--work", default=str(REPO_ROOT / ".gpu-check"), help="checkpoints and logs (kept)")
    parser.add_argument("--out", help="JSON summary (default: WORK/gpu-check.json)")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default: the profile's)")
    return parser.parse_args(argv)


def engine_summary(info) -> dict:
    """What the summary keeps of an engine's ModelInfo (read while its model is loaded)."""
    return {
        "device": info.device,
        "dtype": info.dtype,
        "load_s": round(info.last_load_seconds, 1),
        "kv_cache_tokens": info.kv_cache_tokens,
        "stand_in_for": info.stand_in_for,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"  # every child inherits it
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else work / "gpu-check.json"
    # The profiles live with the phases (heavy imports); their budgets are needed before: mirror them here.
    budget = args.budget or (240.0 if args.small else 470.0)
    # The clock starts at the first start: a bootstrap that re-runs the check under .gpu-venv spent part of it.
    first_start = float(os.environ.setdefault(STARTED_ENV, str(time.time())))
    budget -= max(0.0, time.time() - first_start)
    phases = Phases(budget, {"bootstrap": 60.0 if args.small else 200.0})
    _watchdog(budget)
    summary: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": args.device,
        "size": "small" if args.small else "real",
        "budget_s": budget,
        "failures": [],
    }
    try:
        with phases("bootstrap"):
            summary["machine"] = ensure_packages("benchmarks.gpu_check", argv)
            summary["packages"] = _installed(pinned_requirements())
        _print_machine(summary["machine"], summary["packages"])
        _run(args, work, phases, summary)
    except Exception as exc:  # every failure is reported, then exit 1
        summary["failures"].append(f"{type(exc).__name__}: {exc}")
        print(f"\nFAILED: {type(exc).__name__}: {exc}", flush=True)
        if not isinstance(exc, PhaseTimeout | BootstrapError):
            traceback.print_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        phases_module = sys.modules.get("benchmarks.gpu_phases")
        if phases_module is not None:
            phases_module.close_loop()
    summary["phases"] = phases.records
    summary["total_s"] = round(phases.elapsed(), 1)
    summary["ok"] = not summary["failures"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, out)
    return 0 if summary["ok"] else 1


def _installed(pins: dict[str, str]) -> dict[str, str | None]:
    import importlib.metadata as metadata

    found = {}
    for name in pins:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _print_machine(machine: dict, packages: dict) -> None:
    cuda = (
        f"CUDA {machine.get('torch_cuda')}, {machine.get('device_name')} (sm {machine.get('capability')}, "
        f"{machine.get('total_mib', 0) / 1024:.0f} GiB, {machine.get('free_mib', 0) / 1024:.0f} GiB free)"
        if machine.get("cuda_available")
        else "no CUDA device"
    )
    print(f"python {machine['python']} ({machine['executable']}), {machine['platform']}, {machine['cpu_count']} CPUs")
    print(
        f"torch {machine['torch']} ({cuda}), numpy {machine['numpy']}; nvidia-smi: {machine['nvidia_smi'] or 'absent'}"
    )
    print(f"bootstrap: {machine['bootstrap']}")
    print("packages: " + ", ".join(f"{name} {version}" for name, version in packages.items()), flush=True)


def _run(args: argparse.Namespace, work: Path, phases: Phases, summary: dict) -> None:
    from . import gpu_phases as gp
    from .gpu_stack import (
        TEXT_MODEL,
        LauncherStack,
        device_memory_used_mib,
        launcher_stack,
        stack_config,
        transformers_serve,
    )

    profile = gp.CPU if args.small else gp.GPU
    profile = gp.Profile(**{**vars(profile), "device": args.device})
    phases.limits.update(profile.limits)
    cuda = args.device == "cuda"
    if cuda and not summary["machine"].get("cuda_available"):
        raise RuntimeError("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False)")
    summary["profile"] = {k: v for k, v in vars(profile).items() if k != "limits"}
    models = work / "models"
    if profile.size == "real":
        free_gb = shutil.disk_usage(work).free / 1e9
        print(f"disk: {free_gb:.0f} GB free under {work}")

    with phases("build"):
        if profile.size == "real" and shutil.disk_usage(work).free / 1e9 < REAL_SIZE_DISK_GB and not models.exists():
            raise RuntimeError(f"need ~{REAL_SIZE_DISK_GB} GB free under {work} for the real-size checkpoints")
        paths = gp.build_checkpoints(profile, models, timeout=phases.records["build"]["limit_s"])
        print(f"  {paths}")
        summary["checkpoints"] = paths
    baseline = device_memory_used_mib() if cuda else None

    with contextlib.ExitStack() as running:
        with phases("stack start"):
            config = stack_config(
                paths["text"],
                paths["vision"],
                text_params=profile.text_params,
                vision_params=profile.vision_params,
                idle_unload_secs=profile.idle_unload_secs,
            )
            stack: LauncherStack = running.enter_context(
                launcher_stack(config, args.device, work, timeout=phases.records["stack start"]["limit_s"] - 5)
            )
        # Each engine's info is read right after it served (at the CPU profile's short idle time an engine that
        # waited for the other to load may already have been unloaded at start, and an unloaded engine reports
        # no KV cache and no stand-in).
        summary["engines"] = {}
        with phases("text: proxyvision"):
            summary.setdefault("text", {})["proxyvision"] = gp.text_load(
                "ProxyVision (launcher)", f"{stack.base_url}/v1", TEXT_MODEL, profile
            )
            summary["engines"]["text"] = engine_summary(stack.model_info("text"))
        with phases("captions"):
            summary["captions"] = gp.captions(stack, profile)
            summary["engines"]["vision"] = engine_summary(stack.model_info("vision"))
        print(f"  {summary['engines']}")
        with phases("idle unload"):
            summary["memory"] = gp.idle_unload(stack, profile, baseline)
            for line in gp.memory_lines(summary["memory"], cuda):
                print(line)
            if not summary["memory"]["unload_ok"]:
                summary["failures"].append("idle unload: engine memory did not drop to near zero")
        kv_tokens = summary["engines"]["text"]["kv_cache_tokens"]

    block = profile.text_params.get("block_size", 64)
    with contextlib.ExitStack() as running:
        with phases("transformers serve start"):
            base_url, _ = running.enter_context(
                transformers_serve(
                    paths["text_only"],
                    device=args.device,
                    dtype=profile.dtype_flag,
                    block_size=block,
                    num_blocks=max(1, kv_tokens // block),
                    max_batch_tokens=profile.text_params["prefill_chunk_size"],
                    work=work,
                    timeout=phases.records["transformers serve start"]["limit_s"] - 5,
                )
            )
        with phases("text: transformers serve"):
            summary["text"]["transformers_serve"] = gp.text_load(
                "transformers serve --cb", base_url, paths["text_only"], profile
            )
    summary["ratios"] = _ratios(summary["text"])


def _ratios(text: dict) -> dict:
    ours, theirs = text["proxyvision"], text["transformers_serve"]
    return {
        level: {
            "tok_per_s": round(ours[level]["tok_per_s"] / theirs[level]["tok_per_s"], 2),
            "ttft_p50": round(ours[level]["ttft_p50_ms"] / theirs[level]["ttft_p50_ms"], 2),
        }
        for level in ours
        if level in theirs and theirs[level]["tok_per_s"] and theirs[level]["ttft_p50_ms"]
    }


def _print_summary(summary: dict, out: Path) -> None:
    machine = summary.get("machine", {})
    print(
        f"\nGPU check summary  {summary['date']}  {summary['device']} ({machine.get('device_name', 'no GPU')})  "
        f"{summary['size']} sizes  torch {machine.get('torch')}"
    )
    profile = summary.get("profile", {})
    for label, key in (("ProxyVision", "proxyvision"), ("transformers serve", "transformers_serve")):
        for level, row in summary.get("text", {}).get(key, {}).items():
            print(
                f"  text  {label:<19} {level:>3} streams x {profile.get('max_tokens')} tokens  {row['tok_per_s']:8.1f} tok/s  "
                f"TTFT p50 {row['ttft_p50_ms']:8.1f} ms  p95 {row['ttft_p95_ms']:8.1f} ms  ({row['tokens']}/{row['expected_tokens']} tokens)"
            )
    for level, ratio in summary.get("ratios", {}).items():
        print(
            f"  ours / transformers serve at {level:>3} streams: tok/s {ratio['tok_per_s']:.2f}, TTFT p50 {ratio['ttft_p50']:.2f}"
        )
    captions = summary.get("captions")
    if captions:
        print(
            f"  captions  1 image {captions['one_image_ms']:.1f} ms, 4 images {captions['four_images_ms']:.1f} ms, "
            f"cached {captions['cached_ms']:.1f} ms, one-image chat TTFT {captions['e2e_ttft_ms']:.1f} ms"
        )
    memory = summary.get("memory")
    if memory and summary["device"] == "cpu":
        print("  memory  GPU memory before/after idle unload: n/a on cpu")
    for name, record in summary["phases"].items():
        print(
            f"  phase {name:<26} {record.get('seconds', 0):6.1f} s (limit {record['limit_s']:.0f} s){'' if record['ok'] else '  FAILED'}"
        )
    print(f"  total {summary['total_s']:.1f} s of a {summary['budget_s']:.0f} s budget")
    print(f"{'OK' if summary['ok'] else 'FAILED: ' + '; '.join(summary['failures'])}  (summary: {out})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
