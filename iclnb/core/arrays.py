"""Converting user input (numpy arrays, lists, torch tensors of any dtype and device) to float arrays, with one
clear message for what cannot be converted."""

from __future__ import annotations

import numpy as np

from iclnb.core.errors import IclnbError


def as_float_array(x, name: str, *, dtype=np.float64, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as a numpy array of ``dtype``; torch tensors (any dtype, any device) are detached and copied first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        # numpy has no bfloat16: widen floating tensors before the conversion
        if getattr(x, "is_floating_point", lambda: False)():
            x = x.double()
        x = x.numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise IclnbError(f"{name} must be a numeric array, got {type(x).__name__}: {exc}") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(f"{k}-D" for k in allowed)
            raise IclnbError(f"{name} must be {want}, got shape {arr.shape}")
    return arr
