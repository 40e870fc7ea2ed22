"""fpsim's array functions on torch tensors: the tensor in, the numpy (or CUDA) path, a tensor of
the input's dtype and device out.

CPU tensors cross without a copy: ``Tensor.numpy()`` shares the tensor's memory and
``torch.from_numpy`` the result's, so a call costs what the numpy path costs. float16 and
bfloat16 tensors are widened to float32 (exact) for the kernels. A CUDA tensor is handed to the
CUDA path through its ``__cuda_array_interface__`` and the result is wrapped as a CUDA tensor on
the same device, again without a copy.

The result has the input's dtype only when that is exact: a float format whose values all fit
the dtype (``quantize(t16, "e4m3")`` is float16; ``quantize(t16, "bfloat16")`` is refused,
since bfloat16's range exceeds float16's). For fixed-point and scaled formats, whose values
depend on the data's scale, the result is checked value by value. A refusal names the dtype to
ask for (``t.float()``, ``t.double()``).
"""

from __future__ import annotations

import numpy as np
import torch

import fpsim
from fpsim.numerics import backend
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as parse_format

#: torch float dtypes the bridge takes, with the fpsim format of their values.
FLOAT_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float32: "float32", torch.float64: "float64"}
#: numpy code dtypes and the torch dtypes that hold them.
_CODE_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16,
                np.dtype(np.uint32): torch.uint32, np.dtype(np.uint64): torch.uint64}


def _check_tensor(t, what: str = "t", *, codes: bool = False) -> torch.Tensor:
    """``t`` if it is a tensor this bridge takes, else a TypeError that says what is wrong."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fpsim.torch: {what} must be a torch.Tensor, got {type(t).__name__} "
                        "(use fpsim's own functions for numpy arrays)")
    if t.requires_grad:
        raise TypeError(f"fpsim.torch: {what} requires grad, and this function is not "
                        "differentiable: use fpsim.torch.cast / fpsim.torch.Cast for a rounding "
                        "with a gradient, or pass t.detach()")
    if codes:
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"fpsim.torch: {what} holds codes, which are integers; got {t.dtype}")
    elif t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"fpsim.torch: {what} has dtype {t.dtype}; fpsim rounds real floating "
                        f"values: float16, bfloat16, float32 or float64 (convert integers with "
                        ".double(), which is exact below 2^53)")
    return t


def to_array(t: torch.Tensor):
    """The numpy array (CPU, sharing memory) or the tensor itself (CUDA: fpsim reads its
    ``__cuda_array_interface__``) that fpsim's functions take; float16 and bfloat16 widened to
    float32 (exactly)."""
    if t.is_cuda:
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).contiguous()
    if t.dtype == torch.float16:  # numpy widens NaNs with their sign; torch's scalar path
        return t.numpy().astype(np.float32)  # makes every NaN positive
    if t.dtype == torch.bfloat16:  # (the top half of a float32: exact, NaNs included)
        return (t.view(torch.int16).numpy().astype(np.int32) << 16).view(np.float32)
    return t.numpy()


def from_array(arr, like: torch.Tensor) -> torch.Tensor:
    """A result of fpsim's functions as a tensor on ``like``'s device (no copy)."""
    if backend.is_device_array(arr):
        return torch.as_tensor(arr, device=like.device)
    if like.is_cuda:  # (fixed-point and scaled formats compute on the host)
        return from_array(arr, torch.empty(0)).to(like.device)
    arr = np.asarray(arr)
    if arr.ndim == 0:  # (fpsim returns a scalar for 0-d input: keep the tensor 0-d)
        arr = arr.reshape(())
    if not arr.flags.writeable:
        arr = arr.copy()
    if arr.dtype in _CODE_DTYPES:
        return torch.from_numpy(arr.view(np.dtype(f"int{8 * arr.itemsize}"))).view(
            _CODE_DTYPES[arr.dtype])
    return torch.from_numpy(arr)


def _fits(fmt: Format, carrier: Format) -> bool:
    """Whether every value of the float format ``fmt`` is a value of ``carrier``: its
    significands no longer, its largest binade no higher, and its smallest step (the
    subnormal step, or the smallest normal's ulp) no finer than the carrier's subnormal step."""
    return (fmt.man_bits <= carrier.man_bits and fmt.emax <= carrier.emax
            and fmt.emin - fmt.man_bits >= carrier.emin - carrier.man_bits)


def _element_format(fmt):
    """The :class:`Format` of an element-format argument, or None for fixed-point and scaled
    formats (whose values are checked one by one)."""
    from fpsim.numerics import fixed, scaled
    if isinstance(fmt, Format):
        return fmt
    if fixed.grid_format(fmt) is not None or scaled.scaled_format(fmt) is not None:
        return None
    return parse_format(fmt)


def _narrow(res: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``res`` converted to ``dtype``. To bfloat16 by hand: torch turns every float32 NaN into
    the bfloat16 code 0xFFFF (a negative NaN), while the top 16 bits of the float32 keep the
    NaN's sign, and for a float32 holding a bfloat16 value they are that value's code."""
    if dtype == torch.bfloat16:
        f32 = res.to(torch.float32)  # (exact: a bfloat16 value is a float32 value)
        return (f32.view(torch.int32) >> 16).to(torch.int16).view(torch.bfloat16)
    return res.to(dtype)


def as_dtype(res: torch.Tensor, dtype: torch.dtype, fmt, what: str) -> torch.Tensor:
    """``res`` (the float32/float64 result) in ``dtype``, refused unless that is exact (``fmt``
    None: checked value by value)."""
    if res.dtype == dtype:
        return res
    element = None if fmt is None else _element_format(fmt)
    carrier = parse_format(FLOAT_DTYPES[dtype])
    hint = ("ask for a wider result: call it on "
            + ("t.double()" if dtype == torch.float32 else "t.float() or t.double()"))
    if element is not None:
        if not _fits(element, carrier):
            raise ValueError(f"fpsim.torch.{what}: values of {element} do not all fit "
                             f"{dtype} (the input's dtype); {hint}")
        return _narrow(res, dtype)
    out = _narrow(res, dtype)
    back = out.to(res.dtype)
    same = (back == res) | (torch.isnan(back) & torch.isnan(res))
    if not bool(same.all()):
        i = int((~same).reshape(-1).nonzero()[0])
        raise ValueError(f"fpsim.torch.{what}: the result's element {i} "
                         f"({float(res.reshape(-1)[i])!r}) is not a {dtype} value; {hint}")
    return out


def _result_dtype(*tensors) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def quantize(t, fmt, rounding="rne", overflow=None, seed: int = 0, stats: bool = False, *,
             stream: int = 0, sr_bits: int | None = None):
    """:func:`fpsim.quantize` on a tensor: the values of ``t`` rounded into ``fmt``, as a tensor
    of ``t``'s dtype and device equal bit for bit to ``fpsim.quantize(t.numpy(), ...)`` (and
    the :class:`~fpsim.Stats` with ``stats=True``). Not differentiable: see :func:`cast`.

    Raises:
        TypeError: ``t`` is not a float tensor, or it requires grad.
        ValueError: the result would not be exact in ``t``'s dtype (see the module notes), or
            any argument :func:`fpsim.quantize` refuses.
    """
    t = _check_tensor(t)
    done = fpsim.quantize(to_array(t), fmt, rounding, overflow, seed, stats, stream=stream,
                          sr_bits=sr_bits)
    res, st = done if stats else (done, None)
    out = as_dtype(from_array(res, t), t.dtype, fmt, "quantize")
    return (out, st) if stats else out


def encode(t, fmt, rounding="rne", overflow=None, seed: int = 0, *, stream: int = 0,
           sr_bits: int | None = None):
    """:func:`fpsim.encode` on a tensor: the codes of ``t`` rounded into ``fmt``, as an
    unsigned tensor (``torch.uint8`` ... ``torch.uint64``, the code dtype of ``fmt``) on
    ``t``'s device. For a scaled format, ``(element_codes, scale_codes)`` tensors."""
    t = _check_tensor(t)
    codes = fpsim.encode(to_array(t), fmt, rounding, overflow, seed, stream=stream,
                         sr_bits=sr_bits)
    if isinstance(codes, tuple):
        return tuple(from_array(c, t) for c in codes)
    return from_array(codes, t)


def decode(codes, fmt):
    """:func:`fpsim.decode` on an integer tensor of codes: a float64 tensor of their values on
    the codes' device."""
    codes = _check_tensor(codes, "codes", codes=True)
    if codes.dtype in (torch.uint16, torch.uint32, torch.uint64):  # (numpy() refuses these)
        arr = codes.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[
            codes.element_size()]).cpu().numpy().view(f"uint{8 * codes.element_size()}")
    else:
        arr = codes if codes.is_cuda else codes.numpy()
    return from_array(fpsim.decode(arr, fmt), codes)


def _elementwise(name: str, tensors, fmt, kwargs):
    tensors = [_check_tensor(t, f"operand {i}") for i, t in enumerate(tensors)]
    if kwargs.get("stats") and any(t.is_cuda for t in tensors):
        # fpsim's device arithmetic gives flags but no Stats: with stats=True the op runs on
        # host copies (the same bits), and the results go back to the operands' device.
        arrays = [to_array(t.cpu()) for t in tensors]
    else:
        arrays = [to_array(t) for t in tensors]
    done = getattr(fpsim, name)(*arrays, fmt, **kwargs)
    parts = list(done) if isinstance(done, tuple) else [done]
    dtype = _result_dtype(*tensors)
    parts[0] = as_dtype(from_array(parts[0], tensors[0]), dtype, fmt, name)
    if kwargs.get("flags"):
        parts[1] = from_array(parts[1], tensors[0])
    return parts[0] if len(parts) == 1 else tuple(parts)


#: The positional arguments fpsim's arithmetic takes after the format, with their defaults.
_OP_POSITIONAL = (("rounding", "rne"), ("overflow", "ieee"), ("seed", 0), ("flags", False))


def _op(name: str, arity: int):
    def op(*args, stream=0, sr_bits=None, tininess="after", stats=False, **named):
        extra = args[arity + 1:]
        if len(args) < arity + 1 or len(extra) > len(_OP_POSITIONAL):
            raise TypeError(f"fpsim.torch.{name} takes {arity} tensor(s), a format and at most "
                            f"{', '.join(k for k, _ in _OP_POSITIONAL)}; got {len(args)} "
                            "positional arguments")
        kwargs = dict(_OP_POSITIONAL)
        kwargs.update(zip((k for k, _ in _OP_POSITIONAL), extra))
        for k, v in named.items():
            if k not in kwargs:
                raise TypeError(f"fpsim.torch.{name} got an unexpected keyword argument {k!r}")
            kwargs[k] = v
        return _elementwise(name, args[:arity], args[arity], dict(
            kwargs, stream=stream, sr_bits=sr_bits, tininess=tininess, stats=stats))
    op.__name__ = op.__qualname__ = name
    op.__doc__ = (f":func:`fpsim.{name}` on tensors ({arity} operand(s), then the format, "
                  "then fpsim's positional and keyword arguments): the correctly rounded "
                  "result as a tensor of the operands' promoted dtype (refused where that "
                  "would not be exact) on their device, with the flags tensor and Stats when "
                  "asked for.")
    return op


add, sub, mul, div = (_op(n, 2) for n in ("add", "sub", "mul", "div"))
fma = _op("fma", 3)
sqrt = _op("sqrt", 1)
