"""Side-by-side timings of fitkit against the PyTorch loop one would write by hand (and peers).

Run ``python -m benchmarks`` from the repository root (``--help`` for the options); README.md beside
this file says what each workload is, what "the same work" means, and how the figures are taken.

Nothing is imported here: the parent process that runs the table never imports torch, and the child
that measures ``import fitkit`` must start with nothing loaded.
"""
