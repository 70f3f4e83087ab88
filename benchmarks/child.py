"""One measurement in a fresh process: ``python -m benchmarks.child '{"workload": ..., "runner": ...}'``.

The process pins torch to one thread (the ``*-threads`` workloads leave torch at its default count),
builds the workload's data and model (untimed; ``mlp-jit`` also compiles its step there), pays torch's
one-time lazy costs (:func:`benchmarks.workloads.warm_up`, untimed, the same on every side), then
times the runner and prints one line ``BENCH_RESULT {json}`` with:

- ``wall`` and ``cpu``: ``time.perf_counter`` and ``time.process_time`` seconds of the timed part;
- ``peak_rss_mb``: the process's peak resident set size (``resource.getrusage(...).ru_maxrss``) at the
  end, i.e. interpreter + torch + data + the run;
- ``run_rss_mb``: how far the resident set rose above its level at the start of the timed part (the
  kernel's high-water mark is reset there through ``/proc/self/clear_refs``; None where that fails);
- ``threads``: torch's thread count after the run (fit puts its own back), ``compile_s``: the
  wall seconds of the compiling warm-up (``mlp-jit``; None elsewhere);
- ``loss``: what the run ended on (the last epoch's training loss, the evaluated loss, or the mean
  prediction) and ``weights``: the sum of the model's weights (float64) after it, so the table can
  show that the two sides did the same arithmetic.

Only the standard library is imported at the top: the ``import`` workload times ``import torch``
and ``import fitkit`` from a clean start.
"""

import contextlib
import json
import os
import resource
import sys
import tempfile
import time

MARK = "BENCH_RESULT "


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    """Reset the kernel's peak-RSS mark to the current RSS; True when it worked (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _checksum(model):
    """The sum of all weights in float64: equal on both sides when they did the same arithmetic."""
    if model is None:
        return None
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def _time_imports(runner):
    t0 = time.perf_counter()
    c0 = time.process_time()
    import torch  # noqa: F401
    t1 = time.perf_counter()
    c1 = time.process_time()
    if runner == "hand":
        return {"wall": t1 - t0, "cpu": c1 - c0, "loss": None}
    import fitkit  # noqa: F401
    return {"wall": time.perf_counter() - t1, "cpu": time.process_time() - c1, "loss": None}


def _job(workload, runner, quick, device):
    """The untimed set-up; returns the function to time (which returns ``(loss, model)``)."""
    import torch

    from . import twins
    from . import workloads as w

    family = "mlp" if workload.startswith("mlp") or workload in ("evaluate", "predict") else \
        workload if workload == "ddp" else "article"
    epochs = w.sizes(family, quick)["epochs"]
    if runner in ("keras", "lightning", "poutyne", "skorch"):
        from . import peers
        x, y = w.article_data(quick) if family == "article" else w.mlp_data(quick)
        return getattr(peers, f"{runner}_{family}")(x, y, epochs, device)

    if runner == "fitkit":
        from . import fitkit_runs as side
        model = side.article_model() if family == "article" else side.mlp_model()
    else:
        side = twins
        model = w.article_model() if family == "article" else torch.nn.Sequential(*w.mlp_layers())
    model.to(device)

    if workload in ("article", "article-named-adam", "article-progbar", "article-threads"):
        x, y = w.article_data(quick)
        if runner == "hand-fused":
            return lambda: twins.article(x, y, model, epochs, fused=True, device=device)
        if runner == "hand":
            return lambda: twins.article(x, y, model, epochs, device=device)
        optimizer = "named" if workload == "article-named-adam" else "torch"
        verbose = 1 if workload == "article-progbar" else 0
        return lambda: side.article(x, y, model, epochs, optimizer=optimizer, verbose=verbose, device=device)
    if workload == "dataloader":
        x, y = w.article_data(quick)
        dataset = torch.utils.data.TensorDataset(x, y.float().unsqueeze(1))
        loader = torch.utils.data.DataLoader(dataset, batch_size=w.ARTICLE["batch_size"], shuffle=True,
                                             generator=torch.Generator().manual_seed(w.ORDER_SEED))
        return lambda: side.article_loader(loader, model, epochs, device=device)
    if workload == "ddp":
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # untimed, on both sides (fitkit's compile finds it made)
        x, y = w.mlp_data(quick, family="ddp")
        return lambda: side.ddp(x, y, model, epochs, device=device)
    x, y = w.mlp_data(quick)
    if workload in ("mlp", "mlp-threads"):
        return lambda: side.mlp(x, y, model, epochs, device=device)
    if workload == "mlp-bf16":
        if runner == "fitkit":
            return lambda: side.mlp(x, y, model, epochs, device=device, dtype_policy="mixed_bfloat16")
        return lambda: side.mlp(x, y, model, epochs, device=device, autocast=torch.bfloat16)
    if workload == "mlp-jit":
        # The compilation (a warm-up on the timed batch shapes) is set-up, timed apart as "compile_s".
        if runner == "fitkit":
            seconds = side.mlp_jit_prepare(x, y, model, device=device)
            job = lambda: side.mlp(x, y, model, epochs, device=device, compiled=True)  # noqa: E731
        else:
            optimizer, step, seconds = side.mlp_jit_prepare(x, y, model)
            job = lambda: side.mlp(x, y, model, epochs, device=device, optimizer=optimizer, step=step)  # noqa: E731
        job.compile_s = seconds
        return job
    if workload == "evaluate":
        if runner == "fitkit":
            side.compile_for_evaluate(model, device)  # a user compiled the model long before evaluating
        return lambda: side.evaluate(x, y, model, device=device)
    if workload == "predict":
        return lambda: side.predict(x, model, device=device)
    raise ValueError(f"workload: unknown {workload!r}")


def measure(config):
    """Run one configuration and return the result dict (see the module docstring)."""
    workload, runner = config["workload"], config["runner"]
    if workload == "import":
        result = _time_imports(runner)
        result.update(peak_rss_mb=_peak_rss_mb(), run_rss_mb=None)
        return result

    import torch
    if not config.get("default_threads"):
        torch.set_num_threads(1)
    from . import workloads as w

    device = config.get("device", "cpu")
    job = _job(workload, runner, config.get("quick", False), device)
    w.warm_up()
    peak_before = _peak_rss_mb()
    reset = _reset_peak()
    rss_start = _status_kb("VmRSS") if reset else None

    quiet = workload != "article-progbar"
    with contextlib.ExitStack() as stack:
        if not quiet:
            # The bar is drawn, as a user sees it, but into a file (as when stdout is redirected).
            sink = stack.enter_context(tempfile.TemporaryFile("w+"))
            stack.enter_context(contextlib.redirect_stdout(sink))
        if workload == "ddp":
            torch.distributed.barrier()  # every process starts its clock together
        t0, c0 = time.perf_counter(), time.process_time()
        loss, model = job()
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        drawn = sink.tell() if not quiet else None

    run_rss = (_status_kb("VmHWM") - rss_start) / 1024.0 if reset else None
    result = {"wall": wall, "cpu": cpu, "loss": None if loss is None else float(loss),
              "peak_rss_mb": max(peak_before, _peak_rss_mb()), "run_rss_mb": run_rss, "bar_bytes": drawn,
              "torch": torch.__version__, "weights": _checksum(model), "threads": torch.get_num_threads(),
              "compile_s": getattr(job, "compile_s", None)}
    if runner in ("keras", "lightning", "poutyne", "skorch"):
        from . import peers
        result["version"] = peers.version(runner)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.child '{\"workload\": ..., \"runner\": ...}'", file=sys.stderr)
        return 2
    result = measure(json.loads(argv[0]))
    sys.stdout.flush()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports for the job
        os.write(1, (MARK + json.dumps(result) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
