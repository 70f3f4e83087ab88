"""``python -m benchmarks``: fitkit against its hand-written twin, workload by workload, and the peers.

Each workload runs its fitkit side, its hand-written PyTorch twin (and the peers, when installed) in
fresh processes (:mod:`benchmarks.child`), one after the other, the order rotated every repeat; the
table shows the median of the repeats and the ratio fitkit / hand, against the target of issue 5.

    python -m benchmarks                    # everything, 5 repeats (a few minutes)
    python -m benchmarks --only article,mlp --repeats 9
    python -m benchmarks --quick            # tiny sizes, one repeat: a smoke run
    python -m benchmarks --peer-python /path/to/venv/bin/python   # where keras/lightning/... live

This parent process imports neither torch nor fitkit.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

from .child import MARK

ROOT = pathlib.Path(__file__).resolve().parent.parent
PEERS = ("keras", "lightning", "poutyne", "skorch")
_PEER_MODULES = {"keras": "keras", "lightning": "pytorch_lightning", "poutyne": "poutyne", "skorch": "skorch"}

#: name, what it measures, fitkit's target (fitkit / hand; for "import", seconds added), extra runners.
WORKLOADS = [
    {"name": "article", "what": "logistic regression 1000x10, b32, 50 ep, user's torch.optim.Adam",
     "target": 1.10, "peers": True},
    {"name": "article-named-adam", "what": "the same, optimizer fitkit.optimizers.Adam (fused) vs torch Adam",
     "target": 0.85, "extra": ["hand-fused"]},
    {"name": "article-progbar", "what": "the same, verbose=1 progress bar drawn into a file",
     "target": 1.15},
    {"name": "dataloader", "what": "the same over the user's DataLoader (TensorDataset, shuffle)",
     "target": 1.05},
    {"name": "mlp", "what": "MLP 20000x256-512-512-10, b64, 10% validation, 3 ep",
     "target": 1.03, "peers": True, "memory_target": 1.10},
    {"name": "evaluate", "what": "evaluate: MLP on 20000 samples, b64, vs no_grad loop", "target": 1.05},
    {"name": "predict", "what": "predict: MLP on 20000 samples, b64, vs inference_mode loop", "target": 1.05},
    {"name": "ddp", "what": "torchrun, 2 CPU processes (gloo): MLP 16384x256-512-512-10, global b128, 12.5% val, "
     "3 ep, vs a hand DDP loop", "target": 1.05, "processes": 2},
    {"name": "import", "what": "import fitkit after import torch (s added; hand column: import torch)",
     "target": 0.30},
    # Issue 15. The threads rows leave torch at its default thread count on both sides (fitkit's fit then
    # picks its own, threads="auto") and show wall time (CPU time adds up every thread's), of each side's
    # fastest run: a multi-threaded run on a shared machine takes many times as long whenever another
    # process holds a core, and those runs are not what the row compares.
    {"name": "article-threads", "what": "article at torch's default threads: fit(threads='auto') vs the hand loop",
     "target": 0.50, "default_threads": True, "clock": "wall", "fastest": True},
    {"name": "mlp-threads", "what": "MLP at torch's default threads: fit(threads='auto') vs the hand loop",
     "target": 1.03, "default_threads": True, "clock": "wall", "fastest": True},
    {"name": "mlp-bf16", "what": "MLP, dtype_policy='mixed_bfloat16' vs a hand loop under torch.autocast(bfloat16)",
     "target": 1.05},
    {"name": "mlp-jit", "what": "MLP, jit_compile=True vs a hand loop with torch.compile(forward + loss); "
     "compilation timed apart", "target": 1.05},
]
NAMES = [w["name"] for w in WORKLOADS]


# ----------------------------------------------------------------------------------------- running

def _env(default_threads=False):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["KERAS_BACKEND"] = "torch"
    if not default_threads:
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MKL_NUM_THREADS", "1")
    return env


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_child(config, python=None, processes=None):
    """Run one measurement in a fresh interpreter (under torchrun with ``processes`` of them, rank 0
    reporting); its result dict (``error`` set when it failed)."""
    cmd = [python or sys.executable, "-m", "benchmarks.child", json.dumps(config)]
    if processes:
        cmd[1:2] = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "-m"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(config.get("default_threads", False)), capture_output=True,
                          text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


def peer_available(peer, python):
    """Whether ``peer``'s package is importable by ``python`` (without importing it)."""
    module = _PEER_MODULES[peer]
    if python == sys.executable:
        return importlib.util.find_spec(module) is not None
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def _runners(workload, peers):
    runners = ["fitkit", "hand"] + workload.get("extra", [])
    if workload.get("peers"):
        runners += peers
    return runners


def run_workload(workload, repeats, quick, device, peers, peer_python, log):
    """``{runner: [result, ...]}`` for one workload, the runners' order rotated every repeat."""
    runners = _runners(workload, peers)
    results = {r: [] for r in runners}
    for i in range(repeats):
        order = runners[i % len(runners):] + runners[:i % len(runners)]
        for runner in order:
            config = {"workload": workload["name"], "runner": runner, "quick": quick, "device": device,
                      "default_threads": workload.get("default_threads", False)}
            python = peer_python if runner in PEERS else None
            result = run_child(config, python, workload.get("processes"))
            results[runner].append(result)
            if "error" in result:
                log(f"  {workload['name']} / {runner}: failed ({result['error']})")
    return results


# ----------------------------------------------------------------------------------------- the table

def _median(results, key):
    values = [r[key] for r in results if "error" not in r and r.get(key) is not None]
    return statistics.median(values) if values else None


def _fastest(results, key):
    values = [r[key] for r in results if "error" not in r and r.get(key) is not None]
    return min(values) if values else None


def _first_good(results):
    return next((r for r in results if "error" not in r), {})


def _same(fk, hand, trains=True, what="loss"):
    """Whether both sides did the same arithmetic: the same final weights (training), else the same
    loss or mean prediction (evaluate, predict)."""
    a, b = _first_good(fk), _first_good(hand)
    if trains and a.get("weights") is not None and b.get("weights") is not None:
        diff = abs(a["weights"] - b["weights"])
        losses = (a.get("loss"), b.get("loss"))
        if None in losses or abs(losses[0] - losses[1]) > 1e-5 * max(1.0, abs(losses[1])):
            return "NO: loss differs"
        return "same weights" if diff <= 1e-9 * max(1.0, abs(b["weights"])) else f"weights differ by {diff:.1e}"
    if a.get("loss") is None or b.get("loss") is None:
        return ""
    return f"same {what}" if abs(a["loss"] - b["loss"]) <= 1e-6 * max(1.0, abs(b["loss"])) else \
        f"{what} differs by {abs(a['loss'] - b['loss']):.1e}"


def summarize(workload, results, clock):
    """The table rows (dicts) for one workload."""
    name = workload["name"]
    clock = workload.get("clock", clock)
    stat = _fastest if workload.get("fastest") else _median
    fk, hand = stat(results["fitkit"], clock), stat(results["hand"], clock)
    rows = []
    if name == "import":
        added = fk
        rows.append({"workload": name, "what": workload["what"], "hand": hand, "fitkit": fk,
                     "ratio": f"+{added:.3f} s" if added is not None else "n/a",
                     "target": f"<= +{workload['target']:.2f} s",
                     "met": _met(added, workload["target"]), "check": ""})
        return rows
    ratio = fk / hand if fk and hand else None
    check = _same(results["fitkit"], results["hand"], trains=name not in ("evaluate", "predict"),
                  what="mean output" if name == "predict" else "loss")
    compile_fk, compile_hand = _median(results["fitkit"], "compile_s"), _median(results["hand"], "compile_s")
    if compile_fk is not None and compile_hand is not None:
        check += f"; compile {compile_hand:.1f} vs {compile_fk:.1f} s"
    if workload.get("default_threads"):
        counts = sorted({r.get("threads") for r in results["hand"] if "error" not in r} - {None})
        check += f"; {clock} time, torch's {'/'.join(map(str, counts))} threads" + \
            ("; fastest run" if workload.get("fastest") else "")
    rows.append({"workload": name, "what": workload["what"], "hand": hand, "fitkit": fk,
                 "ratio": f"{ratio:.3f}" if ratio else "n/a", "target": f"<= {workload['target']:.2f}",
                 "met": _met(ratio, workload["target"]), "check": check})
    if workload.get("memory_target"):
        fk_mem, hand_mem = _median(results["fitkit"], "peak_rss_mb"), _median(results["hand"], "peak_rss_mb")
        fk_run, hand_run = _median(results["fitkit"], "run_rss_mb"), _median(results["hand"], "run_rss_mb")
        mem_ratio = fk_mem / hand_mem if fk_mem and hand_mem else None
        rise = "" if fk_run is None or hand_run is None else f"rise in fit: {fk_run:.1f} vs {hand_run:.1f} MB"
        rows.append({"workload": "memory", "what": f"peak RSS of the {name} process, MB (ru_maxrss)",
                     "hand": hand_mem, "fitkit": fk_mem, "ratio": f"{mem_ratio:.3f}" if mem_ratio else "n/a",
                     "target": f"<= {workload['memory_target']:.2f}", "met": _met(mem_ratio, workload["memory_target"]),
                     "check": rise, "unit": "MB"})
    return rows


def _met(value, target):
    if value is None:
        return "?"
    return "yes" if value <= target else "NO"


def _fmt(value, unit="s"):
    if value is None:
        return "n/a"
    return f"{value:.1f}" if unit == "MB" else f"{value:.3f}"


def format_table(rows, header):
    cols = [("workload", "workload"), ("hand", "hand"), ("fitkit", "fitkit"), ("ratio", "fitkit/hand"),
            ("target", "target"), ("met", "met"), ("check", "same result?")]
    cells = [[title for _, title in cols]]
    for row in rows:
        unit = row.get("unit", "s")
        cells.append([row["workload"], _fmt(row["hand"], unit), _fmt(row["fitkit"], unit), row["ratio"],
                      row["target"], row["met"], row["check"]])
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(cols))]
    lines = [header]
    for j, c in enumerate(cells):
        lines.append("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(c)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    lines.append("")
    lines += [f"  {r['workload']}: {r['what']}" for r in rows]
    return "\n".join(lines)


def format_peers(peer_rows):
    if not peer_rows:
        return ""
    cells = [["workload", "runner", "version", "median (s)", "/hand"]]
    for r in peer_rows:
        cells.append([r["workload"], r["runner"], r["version"] or "", _fmt(r["median"]), r["ratio"]])
    widths = [max(len(str(c[i])) for c in cells) for i in range(5)]
    lines = ["Also on the same workloads (ratio to the same hand loop):"]
    for j, c in enumerate(cells):
        lines.append("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(c)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def extra_rows(workload, results, clock):
    """Rows for the runners beyond fitkit and hand (the fused hand loop, the peers)."""
    hand = _median(results["hand"], clock)
    rows = []
    for runner in _runners(workload, list(PEERS))[2:]:
        if runner not in results:
            continue
        median = _median(results[runner], clock)
        versions = {r.get("version") for r in results[runner] if r.get("version")}
        label = "hand, Adam(fused=True)" if runner == "hand-fused" else runner
        rows.append({"workload": workload["name"], "runner": label, "median": median,
                     "version": ", ".join(sorted(versions)),
                     "ratio": f"{median / hand:.2f}" if median and hand else "failed"})
    return rows


# ----------------------------------------------------------------------------------------- main

def machine():
    """One line naming the CPU, the cores and the Python; torch's version comes from the children."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _select(only):
    if not only:
        return list(WORKLOADS)
    chosen = []
    for name in only.split(","):
        name = name.strip()
        if name == "memory":
            name = "mlp"  # the memory row comes from the MLP workload's processes
        matches = [w for w in WORKLOADS if w["name"] == name] or \
            [w for w in WORKLOADS if w["name"].startswith(name)]
        if not matches:
            raise SystemExit(f"--only: unknown workload {name!r}; expected names from {', '.join(NAMES)}")
        chosen += [w for w in matches if w not in chosen]
    return chosen


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="runs per side (default 5; 1 with --quick)")
    p.add_argument("--only", default=None, help=f"comma-separated workloads: {', '.join(NAMES)}, memory")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what the table shows: process CPU time (default; steadier on a shared machine) or wall")
    p.add_argument("--device", default="cpu", help="where both sides train (default cpu)")
    p.add_argument("--no-peers", action="store_true", help="leave out Keras, Lightning, Poutyne and skorch")
    p.add_argument("--peer-python", default=sys.executable,
                   help="the interpreter that has the peers installed (default: this one)")
    p.add_argument("--json", default=None, help="also write every run's raw result to this file")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        p.error(f"--repeats: got {args.repeats}; expected a positive integer")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    selected = _select(args.only)
    peers = []
    if not args.no_peers and any(w.get("peers") for w in selected):
        for peer in PEERS:
            if peer_available(peer, args.peer_python):
                peers.append(peer)
            else:
                print(f"note: {peer} skipped: {_PEER_MODULES[peer]} is not installed for {args.peer_python} "
                      "(pip install -e '.[bench]', or give --peer-python)")
    print(f"machine: {machine()}", flush=True)
    rows, peer_rows, raw, torch_versions = [], [], {}, set()
    for workload in selected:
        print(f"running {workload['name']} ...", flush=True)
        results = run_workload(workload, args.repeats, args.quick, args.device, peers, args.peer_python, print)
        raw[workload["name"]] = results
        torch_versions |= {r.get("torch") for r in results["fitkit"] + results["hand"] if r.get("torch")}
        rows += summarize(workload, results, args.clock)
        peer_rows += extra_rows(workload, results, args.clock)
    clock = "process CPU time" if args.clock == "cpu" else "wall time"
    header = (f"fitkit / hand-written PyTorch: median of {args.repeats} run(s) per side, each in a fresh process, "
              f"torch {', '.join(sorted(torch_versions)) or '?'} on {args.device}, 1 thread, {clock} "
              "(*-threads: torch's default threads, wall time, fastest run)"
              + (" (--quick: tiny sizes, ratios mean nothing)" if args.quick else ""))
    print()
    print(format_table(rows, header))
    if peer_rows:
        print()
        print(format_peers(peer_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "results": raw}, f, indent=1)
    failed = any("error" in r for res in raw.values() for runs in res.values() for r in runs)
    return 1 if failed else 0
