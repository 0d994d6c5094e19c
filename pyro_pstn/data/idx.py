"""Reader for the IDX format of MNIST-like data sets (gzip-compressed or raw), no torchvision."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .types import DataError

#: IDX type codes → numpy dtypes (big-endian where it matters).
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file: magic (0, 0, type, ndim), ndim big-endian sizes, payload."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number); the file is corrupt, delete it and re-download")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{source}: unknown IDX type 0x{dtype_code:02x} or no dimensions; the file is corrupt")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source}: size mismatch: header says shape {shape} ({expected} bytes), file has {len(data)} bytes; "
            "the file is truncated or corrupt, delete it and re-download"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``*.gz``) or raw."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied; make the file readable (chmod a+r) or point the data root "
                        "elsewhere") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a data file; remove it or point the data root elsewhere") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot decompress ({err}); the file is corrupt, delete it and re-download") from None
    return parse_idx(raw, str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if the name ends in .gz); used by tests and tools."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.ascontiguousarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    big = array.astype(np.dtype(_IDX_DTYPES[code]))
    payload = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + big.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
