"""Explicit download of MNIST / Fashion-MNIST into a data root, verified by SHA-256.

Reading never downloads; ``experiments.fit --download`` (or :func:`download`) does. The
checksums are of the original ``.gz`` files (the same bytes torchvision fetches).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from .idx import DataError

MIRRORS = {
    "MNIST": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "FashionMNIST": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

SHA256 = {
    "MNIST": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(folder: str, root: str | os.PathLike, base_url: str | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch the four files of ``folder`` (``MNIST`` or ``FashionMNIST``) into ``root/folder/raw``.

    Each file is written to a temporary name, checked against its SHA-256, and only then moved
    into place, so an interrupted or corrupted download leaves nothing behind.
    """
    if folder not in SHA256:
        raise DataError(f"no download known for {folder!r}; valid: {', '.join(SHA256)}")
    base_url = base_url or MIRRORS[folder]
    target = Path(root) / folder / "raw"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, expected in SHA256[folder].items():
        dest = target / name
        if dest.exists() and sha256_of(dest) == expected:
            continue
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base_url + name, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    out.write(block)
            got = sha256_of(tmp)
            if got != expected:
                raise DataError(f"{base_url + name}: SHA-256 {got} does not match the expected {expected}")
            os.replace(tmp, dest)
            written.append(dest)
        except OSError as err:
            raise DataError(f"could not download {base_url + name}: {err}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return written
