"""The public face: what `import fitkit` gives, and what it must not import."""

import subprocess
import sys

import fitkit


def test_public_names():
    for name in ("Model", "Sequential", "History", "wrap", "set_seed", "plot_histories", "callbacks", "losses",
                 "metrics", "optimizers"):
        assert hasattr(fitkit, name), name
    assert fitkit.callbacks.EarlyStopping and fitkit.callbacks.ProgbarLogger


def test_import_fitkit_does_not_import_plotting_or_tensorboard():
    # FSDP2 and torch.distributed.checkpoint are imported when a model is sharded, not before.
    code = ("import sys, fitkit; heavy = [m for m in ('matplotlib', 'tensorboard', 'torch.utils.tensorboard', "
            "'sklearn', 'torch.distributed.fsdp', 'torch.distributed.checkpoint', 'torch.distributed.tensor') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
