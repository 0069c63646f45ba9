"""Images for sequential classification: Fashion-MNIST in the IDX format (Xiao et al. 2017).

Read row by row, each 28x28 image is a sequence of 28 steps of 28 pixels. The files come from
Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), or any
directory named by the environment variable ``RNNKIT_FASHION_MNIST``.

IDX: a big-endian header, two zero bytes, a type byte (0x08 = uint8), the number of
dimensions, then each dimension as a 4-byte int, then the values in row-major order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch

from .text import DataFormatError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
_DTYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32,
           0x0D: torch.float32, 0x0E: torch.float64}


def read_idx(path) -> torch.Tensor:
    """The array of an IDX file (gzipped when the name ends in ``.gz``), with its dims.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a bad magic number, an unknown type, or a byte count that does not
            match the dimensions.
    """
    name = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{name}: no such file")
    raw = Path(path).read_bytes()
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataFormatError(f"{name}: not a readable gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataFormatError(f"{name}: not an IDX file (expected the magic 00 00 <type> "
                              f"<dims>, got {raw[:4].hex(' ') or 'nothing'})")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{name}: truncated header ({len(raw)} bytes, {ndim} dims)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = 1
    for d in dims:
        count *= d
    if len(raw) - header != count * itemsize:
        raise DataFormatError(f"{name}: expected {count * itemsize} bytes of data for dims "
                              f"{dims}, got {len(raw) - header}")
    values = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8)
    if itemsize > 1:  # IDX is big-endian: reverse each item's bytes for this little-endian view
        values = values.view(-1, itemsize).flip(1).contiguous().view(dtype)
    else:
        values = values.view(dtype)
    return values.reshape(dims)


def load_fashion_mnist(root=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (images uint8 (60000, 28, 28), labels int64 (60000,)), "test": (10000 ...)}``;
    label k is ``FASHION_CLASSES[k]``."""
    root = Path(root or os.environ.get("RNNKIT_FASHION_MNIST") or FASHION_DIR)
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST not found in {root}: install it with "
                                f"`apt-get install -y dataset-fashion-mnist` (or `make data`), "
                                f"or set RNNKIT_FASHION_MNIST to a folder of its IDX files")
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").long()
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataFormatError(f"{root}: {prefix} images {tuple(images.shape)} and labels "
                                  f"{tuple(labels.shape)} do not match")
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < 10:
            raise DataFormatError(f"{root}: {prefix} labels outside 0..9")
        out[split] = (images, labels)
    return out
