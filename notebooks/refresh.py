"""Run the teaching notebooks top to bottom and write their outputs into them (what a repository page shows).

    python notebooks/refresh.py                              # every notebook in this folder
    python notebooks/refresh.py 01_how_many_fit_calls.ipynb  # one of them

Each notebook runs in a fresh kernel on the CPU with one thread (small models train fastest so, and the
numbers come out the same on every run: every notebook is seeded). ``tests/test_notebooks.py`` runs
them the same way, through :func:`execute`, on copies. Needs the dev extra (nbclient, ipykernel,
scikit-learn, matplotlib).
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def notebooks():
    """The notebooks of this folder, in their reading order."""
    return sorted(glob.glob(os.path.join(HERE, "[0-9]*.ipynb")))


def kernel_env():
    """The kernel's environment: the CPU only, one thread, no display."""
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONHASHSEED": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    return env


def execute(path, timeout=180):
    """The notebook at ``path`` run top to bottom in its own folder; returns it with its outputs (the file
    itself is not written)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    client.execute(env=kernel_env())
    return nb


def compress_images(nb, colors=64):
    """Each PNG output as a 64-color palette image: a third of the bytes, the same picture (plots use few
    colors), so a notebook stays a few hundred KB."""
    import base64
    import io

    from PIL import Image

    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            image = Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")
            small = io.BytesIO()
            image.quantize(colors=colors, dither=Image.Dither.NONE).save(small, "PNG", optimize=True)
            data["image/png"] = base64.b64encode(small.getvalue()).decode("ascii")


def refresh(path):
    import nbformat

    nb = execute(path)
    compress_images(nb)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
    for name in sys.argv[1:] or notebooks():
        refresh(name if os.path.isabs(name) or os.path.exists(name) else os.path.join(HERE, name))
