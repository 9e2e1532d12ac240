"""Writing and reading results: JSON, CSV and npz, each written atomically
(:func:`iclnb.core.files.atomic_write`: a crash or a full disk never leaves a half-written file), and one strict
JSON codec. JSON is strict: NaN is written as ``null`` and read back as NaN where a number is expected
(:func:`nan_array`), infinity is refused with its key path.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.core.files import atomic_write, write_text

__all__ = ["write_json", "read_json", "write_csv", "write_npz", "read_npz", "to_jsonable", "nan_array"]


def write_csv(path, table) -> Path:
    """A pandas DataFrame as CSV (floats with 9 significant digits), atomically."""
    with atomic_write(path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.9g")
    return Path(path)


def write_npz(path, **arrays) -> Path:
    """Arrays as an uncompressed ``.npz`` (never pickle: object arrays are refused), atomically."""
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"array {name} has dtype object, which npz stores only by pickling; convert it first")
    with atomic_write(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def read_npz(path) -> dict | None:
    """The arrays of an ``.npz`` written by :func:`write_npz`, or None when the file is missing or damaged (a
    truncated file, say): the caller recomputes what it held. Never unpickles."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def nan_array(values, dtype=np.float64) -> np.ndarray:
    """A (nested) list from strict JSON as a float array, ``null`` -> NaN."""
    obj = np.array(values, dtype=object)
    return np.where(obj == None, np.nan, obj).astype(dtype)  # noqa: E711


def _child(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_float(x: float, path: str):
    if math.isnan(x):
        return None
    if math.isinf(x):
        raise ValueError(f"{path or 'value'} is {'inf' if x > 0 else '-inf'}; results must be finite (NaN is "
                         f"written as null, infinity is refused)")
    return x


def _array_to_jsonable(arr: np.ndarray, path: str):
    if arr.dtype.kind in "fc":
        if arr.dtype.kind == "c":
            raise TypeError(f"{path or 'value'} is a complex array; store real and imaginary parts separately")
        bad = np.isinf(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            where = (path or "value") + "".join(f"[{int(i)}]" for i in idx)
            raise ValueError(f"{where} is {'inf' if arr[tuple(idx)] > 0 else '-inf'}; results must be finite "
                             f"(NaN is written as null, infinity is refused)")
        data = arr.astype(np.float64).tolist() if arr.dtype != np.float64 else arr.tolist()
        if np.isnan(arr).any():
            return _nan_to_none(data)
        return data
    if arr.dtype.kind in "biu":
        return arr.tolist()
    if arr.dtype.kind in "USO":
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(arr.tolist())] if arr.ndim == 1 else \
            [_array_to_jsonable(np.asarray(sub, dtype=arr.dtype), f"{path}[{i}]") for i, sub in enumerate(arr)]
    raise TypeError(f"{path or 'value'} is an array of dtype {arr.dtype}, which has no JSON form")


def _nan_to_none(data):
    if isinstance(data, list):
        return [_nan_to_none(v) for v in data]
    return None if isinstance(data, float) and math.isnan(data) else data


def to_jsonable(obj: Any, _path: str = "") -> Any:
    """``obj`` as plain JSON-safe Python: numpy arrays/scalars -> lists/Python numbers, NaN -> None, tuples and sets
    -> lists, paths -> str, datetimes -> ISO strings, dict keys -> str. Infinity raises ``ValueError`` naming the key
    path (``results.layer_3.phi[7] is inf``): an infinite metric is a bug upstream, never a value to store.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _check_float(float(obj), _path)
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return _check_float(float(obj), _path)
        if isinstance(obj, np.str_):
            return str(obj)
        return _array_to_jsonable(np.asarray(obj), _path)
    if isinstance(obj, np.ndarray):
        return _array_to_jsonable(obj, _path)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            key = str(k.item() if isinstance(k, np.generic) else k)
            out[key] = to_jsonable(v, _child(_path, key))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        items = list(obj)
        try:
            items.sort()
        except TypeError:
            pass
        return [to_jsonable(v, f"{_path}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach"):  # a tensor, without importing torch
        t = obj.detach().cpu()
        if t.is_floating_point():
            t = t.double()
        return _array_to_jsonable(t.numpy(), _path)
    raise TypeError(f"{_path or 'value'} is a {type(obj).__name__}, which has no JSON form; convert it to numbers, "
                    f"strings, lists or dicts")


def write_json(path, obj) -> Path:
    """Write ``obj`` as strict JSON (no NaN/Infinity tokens), atomically (:func:`~iclnb.core.files.atomic_write`):
    the whole text is built first, so a value that cannot be stored leaves the previous file untouched."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return write_text(path, text)


def _refuse_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def read_json(path) -> Any:
    """Read strict JSON (``NaN``/``Infinity`` tokens are refused)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except ValueError as e:
        raise IclnbError(f"{path} is not valid JSON ({e}); delete it or restore it from a backup") from None

