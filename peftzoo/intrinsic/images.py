"""The classic intrinsic-dimension tasks of Li et al. 2018: MNIST / Fashion-MNIST (local IDX or CSV files) and
scikit-learn's bundled 8×8 digits (the embedded default, no files), with their FC 784-200-200-10 and LeNet nets.

Local files are found under the data setting (``--data-dir`` / ``$PEFTZOO_DATA_DIR``): ``<dir>/mnist`` and
``<dir>/fashion-mnist``. MNIST here: the official t10k set (10,000) trains, the disjoint ``mnist_5k.csv.gz``
(5,000) tests. Fashion-MNIST: the official 60k / 10k split.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from peftzoo.bench.tasks import resolve_data_dir


def read_idx(path: Path) -> np.ndarray:
    """A gzip-compressed IDX file (uint8 data) as an array; a missing, corrupt or truncated file is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the {path.parent.name}/ folder needs the official IDX files)")
    try:
        with gzip.open(path, "rb") as f:
            magic, = struct.unpack(">I", f.read(4))
            ndim = magic & 0xFF
            if magic >> 8 != 0x08 or not 1 <= ndim <= 4:  # 0x08: unsigned bytes
                raise ValueError(f"magic number {magic:#010x} is not an unsigned-byte IDX header")
            shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
            data = f.read()
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as e:
        raise ValueError(f"{path} is not a valid gzip-compressed IDX file ({type(e).__name__}: {e}); "
                         "replace it with the official one") from e
    if len(data) != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated or corrupt: its header says {shape} ({int(np.prod(shape))} bytes), "
                         f"it holds {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


def _read_csv_gz(path: Path) -> np.ndarray:
    """Rows of 784 pixels then the label; no header (one is tolerated)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        with gzip.open(path, "rt") as f:
            first = f.readline()
            skip = 0 if first.split(",")[0].strip().isdigit() else 1
            f.seek(0)
            arr = np.loadtxt(f, delimiter=",", skiprows=skip, dtype=np.float32, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a valid gzip-compressed CSV of 785 columns ({type(e).__name__}: {e}); "
                         "replace it with the original") from e
    if arr.shape[1] != 785:
        raise ValueError(f"{path} has {arr.shape[1]} columns, expected 785 (784 pixels and the label)")
    return arr


def _pair(images: np.ndarray, labels: np.ndarray, where: Path):
    if len(images) != len(labels):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _find(data_dir, name: str) -> Path:
    d = resolve_data_dir(data_dir)
    if d is None:
        raise FileNotFoundError(f"{name} needs local files: pass --data-dir DIR or set PEFTZOO_DATA_DIR=DIR "
                                f"with DIR/{name}/ holding the IDX files (or use task 'digits', which needs none)")
    for root in (d / name, d.parent / name):
        if root.is_dir():
            return root
    raise FileNotFoundError(f"no {name}/ folder under {d}")


FILES = {"mnist": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "mnist_5k.csv.gz"),
         "fashion-mnist": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                           "t10k-labels-idx1-ubyte.gz")}


def image_source(task: str, data_dir=None) -> str:
    """What ``task``'s images are, as plain text (part of a score's identity): a hash of the files' contents, so
    the same files anywhere give the same identity."""
    if task == "digits":
        return "sklearn:load_digits"
    from peftzoo.bench.tasks import _digest
    root = _find(data_dir, task)
    h = hashlib.sha256()
    for name in FILES[task]:
        p = root / name
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing (the {task}/ folder needs {', '.join(FILES[task])})")
        st = p.stat()
        h.update(f"{name}:{_digest(str(p), st.st_size, st.st_mtime_ns)};".encode())
    return f"local:{h.hexdigest()[:16]}"


def load_images(task: str, data_dir=None, max_train: int | None = None):
    """(x_train, y_train, x_test, y_test) as float tensors in [0, 1] (images N×1×H×W) and int64 labels."""
    if task == "digits":
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).reshape(-1, 1, 8, 8)
        idx = np.random.default_rng(0).permutation(len(y))
        cut = int(0.8 * len(y))
        xtr, ytr, xte, yte = x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]
    elif task == "mnist":
        root = _find(data_dir, "mnist")
        xtr, ytr = _pair(read_idx(root / "t10k-images-idx3-ubyte.gz"), read_idx(root / "t10k-labels-idx1-ubyte.gz"),
                         root)
        arr = _read_csv_gz(root / "mnist_5k.csv.gz")
        xte, yte = arr[:, :784].reshape(-1, 28, 28), arr[:, 784].astype(np.int64)
        xtr, xte = xtr[:, None] / 255.0, xte[:, None] / 255.0
    elif task == "fashion-mnist":
        root = _find(data_dir, "fashion-mnist")
        xtr, ytr = _pair(read_idx(root / "train-images-idx3-ubyte.gz"),
                         read_idx(root / "train-labels-idx1-ubyte.gz"), root)
        xte, yte = _pair(read_idx(root / "t10k-images-idx3-ubyte.gz"), read_idx(root / "t10k-labels-idx1-ubyte.gz"),
                         root)
        xtr, xte = xtr[:, None] / 255.0, xte[:, None] / 255.0
    else:
        raise ValueError(f"unknown image task {task!r}: digits, mnist, fashion-mnist")
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    xtr, ytr = xtr[:max_train], ytr[:max_train]
    return t(xtr, torch.float32), t(ytr, torch.int64), t(xte, torch.float32), t(yte, torch.int64)


def fc_net(side: int, hidden: int = 200, classes: int = 10) -> nn.Module:
    """Li et al.'s fully connected net: in-200-200-10, ReLU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, classes))


def lenet(side: int, classes: int = 10) -> nn.Module:
    """LeNet as in Li et al.: conv(6, 5×5)-pool-conv(16, 5×5)-pool-fc120-fc84-fc10 (small inputs keep their size)."""
    small = side < 16
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5, padding=2 if small else 0), nn.ReLU(),
                         nn.Identity() if small else nn.MaxPool2d(2), nn.Flatten(),
                         nn.LazyLinear(120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))


NETS = {"fc": fc_net, "lenet": lenet}


def build_net(name: str, side: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = NETS[name](side)
    with torch.no_grad():
        net(torch.zeros(1, 1, side, side))  # materialise lazy layers
    return net


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 2048) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + bs]).argmax(-1) == y[i:i + bs]).sum()) for i in range(0, len(y), bs))
    return correct / len(y)


SIDE = {"digits": 8, "mnist": 28, "fashion-mnist": 28}  # image side per task (all 1-channel, 10 classes)


def file_sha(path) -> str:
    """The identity of a θ0 file: ``sha256:`` and the first 16 hex digits of its bytes' SHA-256."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_init(net: nn.Module, path, what: str = "the net", sha: str | None = None) -> str:
    """Load the state_dict file ``path`` (``--init-from``) into ``net`` as θ0; returns ``file_sha(path)``.

    A missing or unreadable file, a key that one side lacks, or a shape that differs is a clear error naming the
    first such key (and both shapes); ``sha``: the file's expected identity (a file changed since is refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {path}: no such file (expected a torch state_dict of {what})")
    got = file_sha(path)
    if sha is not None and got != sha:
        raise ValueError(f"--init-from {path} changed since the search began ({got}, expected {sha})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file
        raise ValueError(f"--init-from {path} is not a torch state_dict file ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--init-from {path} holds a {type(state).__name__}, not a state_dict (name -> tensor)")
    own = net.state_dict()
    for k in own:
        if k not in state:
            raise ValueError(f"--init-from {path} does not fit {what}: key {k!r} is missing from the file")
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise ValueError(f"--init-from {path} does not fit {what}: {k!r} has shape {tuple(state[k].shape)} "
                             f"in the file, {tuple(own[k].shape)} in the net")
    extra = [k for k in state if k not in own]
    if extra:
        raise ValueError(f"--init-from {path} does not fit {what}: the file has key {extra[0]!r}, the net has not")
    net.load_state_dict(state)
    return got
