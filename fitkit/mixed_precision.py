"""Keras's dtype policies: the dtype a model computes in, while its weights stay float32.

``compile(dtype_policy=...)`` takes one of Keras's names; without it compile uses the global policy
that :func:`set_dtype_policy` (Keras's ``keras.config.set_dtype_policy``, also spelled
``set_global_policy`` as in ``keras.mixed_precision``) sets, "float32" unless changed:

- ``"float32"``: everything in float32, as the model is (no autocast);
- ``"mixed_bfloat16"``: the forward and the loss run under ``torch.autocast`` in bfloat16, the weights,
  gradients and optimizer stay float32; works on the CPU and on CUDA;
- ``"mixed_float16"``: the same in float16, with the loss scaled by a ``torch.amp.GradScaler`` (Keras's
  ``LossScaleOptimizer``) so small gradients do not underflow: on CUDA, and on the CPU where torch runs
  float16 autocast (torch 2.4 and later; slow there: CPUs rarely have float16 arithmetic).

>>> set_dtype_policy("mixed_bfloat16")      # doctest: +SKIP
>>> model.compile(optimizer="adam", loss="mse", dtype_policy="mixed_bfloat16")   # or per model
"""

import contextlib
import warnings

import torch

__all__ = ["DTypePolicy", "set_dtype_policy", "dtype_policy", "set_global_policy", "global_policy"]

_COMPUTE = {"float32": torch.float32, "mixed_float16": torch.float16, "mixed_bfloat16": torch.bfloat16}
_EXPECTED = "'float32', 'mixed_float16' or 'mixed_bfloat16'"
_NO_AUTOCAST = contextlib.nullcontext()


def check(policy, argument="dtype_policy"):
    """The policy's name from a name or a :class:`DTypePolicy`, or the error naming ``argument``."""
    name = policy.name if isinstance(policy, DTypePolicy) else policy
    if not isinstance(name, str) or name not in _COMPUTE:
        raise ValueError(f"{argument}: got {policy!r}; expected {_EXPECTED}")
    return name


class DTypePolicy:
    """A dtype policy by Keras's name, with Keras's ``compute_dtype`` and ``variable_dtype``.

    >>> DTypePolicy("mixed_bfloat16").compute_dtype
    'bfloat16'
    """

    def __init__(self, name="float32"):
        self.name = check(name, "name")

    @property
    def compute_dtype(self):
        """The dtype the forward and the loss compute in: "float32", "float16" or "bfloat16"."""
        return str(_COMPUTE[self.name]).replace("torch.", "")

    @property
    def variable_dtype(self):
        """The dtype of the weights: always "float32" (the weights are never cast)."""
        return "float32"

    @property
    def autocast_dtype(self):
        """The torch dtype autocast computes in, or None for "float32" (no autocast)."""
        return None if self.name == "float32" else _COMPUTE[self.name]

    def __eq__(self, other):
        return isinstance(other, DTypePolicy) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f'<DTypePolicy "{self.name}">'


_global = DTypePolicy("float32")


def set_dtype_policy(policy):
    """Set the policy that ``compile`` uses when it is not given ``dtype_policy`` (Keras's name).

    >>> set_dtype_policy("mixed_bfloat16")       # doctest: +SKIP
    """
    global _global
    _global = DTypePolicy(check(policy, "policy"))


def dtype_policy():
    """The global :class:`DTypePolicy` (``"float32"`` unless :func:`set_dtype_policy` changed it)."""
    return _global


# keras.mixed_precision's spelling of the same two functions
set_global_policy = set_dtype_policy
global_policy = dtype_policy


def resolve(policy, device):
    """The :class:`DTypePolicy` a model compiled for ``device`` uses: ``policy`` (a name, a policy or None
    for the global one), checked against what torch can run there, before anything changes."""
    chosen = DTypePolicy(check(policy)) if policy is not None else _global
    dtype = chosen.autocast_dtype
    if dtype is None:
        return chosen
    device = torch.device(device)
    with warnings.catch_warnings():
        # torch warns and disables autocast for a dtype a device cannot run; fitkit says so as an error.
        warnings.simplefilter("ignore")
        try:
            runs = bool(torch.autocast(device.type, dtype=dtype)._enabled)
        except (RuntimeError, ValueError):
            runs = False
    if runs and chosen.name == "mixed_float16":
        runs = _grad_scaler_class(device) is not None
    if not runs:
        hint = " (mixed_bfloat16 runs on the CPU)" if device.type == "cpu" else ""
        raise ValueError(f"dtype_policy: got {chosen.name!r}, which torch {torch.__version__} cannot run on "
                         f"{device.type}; expected a policy this device runs{hint}, or 'float32'")
    return chosen


def _grad_scaler_class(device):
    scaler = getattr(torch.amp, "GradScaler", None)  # torch >= 2.3; older ones have only the CUDA scaler
    if scaler is not None:
        try:
            scaler(device.type, enabled=True)
        except (RuntimeError, ValueError, TypeError, AssertionError):
            return None
        return scaler
    return torch.cuda.amp.GradScaler if device.type == "cuda" else None


def grad_scaler(device, initial_scale=2.0 ** 15, growth_interval=2000):
    """A GradScaler with Keras's ``LossScaleOptimizer`` defaults (initial scale 2**15, doubled after 2000
    finite steps, halved and the step skipped on a non-finite gradient)."""
    device = torch.device(device)
    cls = _grad_scaler_class(device)
    kwargs = dict(init_scale=initial_scale, growth_factor=2.0, backoff_factor=0.5, growth_interval=growth_interval)
    return cls(device.type, **kwargs) if cls is not torch.cuda.amp.GradScaler else cls(**kwargs)


def autocast(policy, device):
    """The context the forward and the loss run in: ``torch.autocast`` for a mixed policy, else a no-op."""
    dtype = policy.autocast_dtype
    if dtype is None:
        return _NO_AUTOCAST
    return torch.autocast(torch.device(device).type, dtype=dtype)


def for_model(model):
    """The policy of ``model``: its compiled one, else the global one (predict works before compile)."""
    compiled = getattr(model, "_compiled", None)
    return compiled.step.policy if compiled is not None else _global


def outputs_float32(outputs, policy):
    """Outputs computed under a mixed policy, with half-precision tensors as float32 (NumPy has no
    bfloat16, and a user reads predictions at full precision); as they are under "float32"."""
    if policy.autocast_dtype is None:
        return outputs
    half = (torch.float16, torch.bfloat16)
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype in half else outputs
    if isinstance(outputs, dict):
        return {k: outputs_float32(v, policy) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(outputs_float32(v, policy) for v in outputs) if type(outputs) in (list, tuple) \
            else outputs
    return outputs
