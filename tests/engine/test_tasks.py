"""Tasks (SPEC §6): shipped data loads offline and splits the same way every time; batches cover and
shuffle as promised; CIFAR-10 reads both formats and refuses hostile pickles; user-data errors say
what to put where. No network: shipped files, or tiny datasets written to tmp_path.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from engine import tasks
from engine.hosts import CNNHost, TransformerHost
from engine.tasks import TaskDataError, load_task


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> tasks.Task:
    return tasks.digits()


def test_digits_shapes_and_classes(digits):
    assert digits.kind == "classification" and digits.topology == "cnn"
    assert digits.train_x.shape[1:] == (1, 8, 8) and digits.train_x.dtype == torch.float32
    assert digits.train_y.dtype == torch.int64
    assert digits.train_x.shape[0] + digits.val_x.shape[0] == 1797
    # 80/20 within rounding, and stratified: every class in both splits.
    assert abs(digits.val_x.shape[0] - 0.2 * 1797) < 10
    assert set(digits.train_y.tolist()) == set(digits.val_y.tolist()) == set(range(10))
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == 8


def test_digits_split_is_deterministic_and_disjoint(digits):
    again = load_task("digits")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.val_y, digits.val_y)
    _, labels = tasks._read_csv_gz("digits-8x8.csv.gz")
    train_idx, val_idx = tasks._stratified_split(tuple(labels.tolist()), tasks.VAL_FRACTION)
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1797))
    assert torch.equal(labels[train_idx], digits.train_y) and torch.equal(labels[val_idx], digits.val_y)


def test_digits_normalised_with_train_stats(digits):
    assert abs(digits.train_x.mean().item()) < 1e-5
    assert digits.train_x.std().item() == pytest.approx(1.0, abs=1e-4)
    assert abs(digits.val_x.mean().item()) < 0.1  # same transform, different images
    # Oracle: scale to [0, 1], standardise with the train split's float64 mean/std.
    pixels, labels = tasks._read_csv_gz("digits-8x8.csv.gz")
    train_idx, val_idx = tasks._stratified_split(tuple(labels.tolist()), tasks.VAL_FRACTION)
    train = pixels[train_idx].double() / 16
    want = (pixels[val_idx].double() / 16 - train.mean()) / train.std()
    torch.testing.assert_close(digits.val_x.flatten(1), want.float(), atol=1e-5, rtol=0)


def test_digits_host_kwargs_build_a_working_host(digits):
    host = CNNHost(**digits.host_kwargs)
    x, _ = next(digits.batches("val", 4))
    assert host(x).shape == (4, digits.num_classes)


def test_train_batches_cover_the_split_once_and_shuffle_by_seed(digits):
    n, b = digits.train_x.shape[0], 64
    assert digits.steps_per_epoch(b) == -(-n // b)
    # Same task with every image replaced by its own row index, so a batch says which rows it holds.
    tagged = replace(digits, train_x=torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 8, 8))

    def order(seed: int) -> list[int]:
        batches = list(tagged.batches("train", b, gen(seed)))
        assert len(batches) == digits.steps_per_epoch(b)
        out: list[int] = []
        for x, y in batches:
            assert x.shape[1:] == (1, 8, 8) and y.shape == (x.shape[0],)
            idx = x[:, 0, 0, 0].long()
            assert torch.equal(y, digits.train_y[idx])  # labels travel with their images
            out += idx.tolist()
        return out

    a, a2, c = order(0), order(0), order(1)
    assert sorted(a) == list(range(n))  # every example exactly once
    assert a == a2 and a != c and a != sorted(a)


def test_val_batches_keep_the_stored_order(digits):
    xs, ys = zip(*digits.batches("val", 100, gen(0)))
    assert torch.equal(torch.cat(xs), digits.val_x) and torch.equal(torch.cat(ys), digits.val_y)
    xs2, _ = zip(*digits.batches("val", 100, gen(99)))
    assert torch.equal(torch.cat(xs2), digits.val_x)


def test_split_moves_to_the_device_once(digits):
    task = tasks.digits()
    list(task.batches("train", 256, gen(0)))
    cached = task._device_cache["train@cpu"][0]
    list(task.batches("train", 256, gen(1), device=torch.device("cpu")))
    assert task._device_cache["train@cpu"][0] is cached


def test_randomness_is_drawn_when_batches_is_called(digits):
    g = gen(0)
    before = g.get_state()
    digits.batches("train", 32, g)  # not iterated
    assert not torch.equal(g.get_state(), before)
    after = g.get_state()
    digits.batches("val", 32, g)
    assert torch.equal(g.get_state(), after)  # val draws nothing


def test_bad_split_name(digits):
    with pytest.raises(ValueError, match="split"):
        digits.batches("test", 8)


# ----------------------------------------------------------------------------- mnist5k


def test_mnist5k_shapes_and_classes():
    task = load_task("mnist5k")
    assert task.train_x.shape == (4000, 1, 28, 28) and task.val_x.shape == (1000, 1, 28, 28)
    assert torch.equal(task.train_y.bincount(), torch.full((10,), 400))
    assert torch.equal(task.val_y.bincount(), torch.full((10,), 100))
    assert abs(task.train_x.mean().item()) < 1e-5
    x, y = next(task.batches("train", 8, gen(0)))
    assert CNNHost(**task.host_kwargs)(x).shape == (8, 10) and y.shape == (8,)


# ----------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def text() -> tasks.Task:
    return tasks.text()


def test_text_vocab_and_split(text):
    assert text.kind == "language_model" and text.topology == "transformer"
    assert text.vocab_size == len(text.vocab) == text.host_kwargs["vocab_size"] == 128
    assert text.train_y is None and text.train_x.dtype == torch.int64 and text.train_x.dim() == 1
    for stream in (text.train_x, text.val_x):
        assert 0 <= stream.min() and stream.max() < text.vocab_size
    total = text.train_x.numel() + text.val_x.numel()
    assert text.val_x.numel() == pytest.approx(0.1 * total, abs=1)
    assert "def" in text.decode(text.train_x[:20000])  # ids are ASCII code points
    assert text.steps_per_epoch(32) == 100


def test_text_windows_shift_by_one_and_follow_the_generator(text):
    t = text.block_size
    batches = list(text.batches("train", 32, gen(3)))
    assert len(batches) == text.steps_per_epoch(32)
    x, y = batches[0]
    assert x.shape == y.shape == (32, t) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # Same windows over a stream whose token at position p is p: each row must be p0 … p0+t-1 with
    # targets p0+1 … p0+t, and p0+t must still be inside the stream.
    n = text.train_x.numel()
    tagged = replace(text, train_x=torch.arange(n))
    px, py = next(iter(tagged.batches("train", 32, gen(3))))
    starts = px[:, :1]
    assert torch.equal(px, starts + torch.arange(t)) and torch.equal(py, px + 1)
    assert starts.min() >= 0 and int(py.max()) <= n - 1
    assert torch.equal(text.train_x[px], x)  # the real batch is those same windows
    again = next(iter(text.batches("train", 32, gen(3))))
    other = next(iter(text.batches("train", 32, gen(4))))
    assert torch.equal(again[0], x) and not torch.equal(other[0], x)


def test_text_val_windows_are_fixed(text):
    a = list(text.batches("val", 64, gen(0)))
    b = list(text.batches("val", 64, gen(1)))
    assert len(a) == len(b) > 0
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    x, y = a[0]
    t = text.block_size
    assert torch.equal(x[0], text.val_x[:t]) and torch.equal(y[0], text.val_x[1 : t + 1])


def test_text_host_kwargs_build_a_working_host(text):
    host = TransformerHost(**text.host_kwargs)
    x, _ = next(text.batches("val", 2))
    assert host(x).shape == (2, text.block_size, text.vocab_size)


# ----------------------------------------------------------------------------- textfile


def test_textfile_vocab_from_the_file(tmp_path):
    body = "the quick brown fox jumps over the lazy dog — ünïcödé ✓\n" * 40
    path = tmp_path / "corpus.txt"
    path.write_text(body, encoding="utf-8")
    task = load_task("textfile", path)
    assert task.vocab == tuple(sorted(set(body)))
    assert task.host_kwargs["vocab_size"] == task.vocab_size == len(set(body))
    assert task.decode(task.train_x) + task.decode(task.val_x) == body
    x, y = next(task.batches("train", 4, gen(0)))
    assert x.shape == y.shape == (4, task.block_size) and torch.equal(x[:, 1:], y[:, :-1])
    assert task.steps_per_epoch(4) == -(-task.epoch_windows // 4) >= 1


def test_textfile_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(TaskDataError, match="does not exist"):
        tasks.textfile(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(TaskDataError, match="is empty"):
        tasks.textfile(tmp_path / "empty.txt")
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(TaskDataError, match="at least"):
        tasks.textfile(tmp_path / "short.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 " * 200)
    with pytest.raises(TaskDataError, match="not UTF-8"):
        tasks.textfile(tmp_path / "latin1.txt")
    with pytest.raises(TaskDataError, match="not a file"):
        tasks.textfile(tmp_path)


# ----------------------------------------------------------------------------- cifar10

NAMES = [*tasks.CIFAR_TRAIN, tasks.CIFAR_TEST]


def fake_cifar(per_file: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Per batch file: uint8 pixels (n, 3072) whose red plane is the label, and the labels."""
    rng = np.random.RandomState(0)
    out = {}
    for i, name in enumerate(NAMES):
        labels = [(i + j) % 10 for j in range(per_file)]
        pixels = rng.randint(0, 256, (per_file, 3072)).astype(np.uint8)
        pixels[:, :1024] = np.array(labels, dtype=np.uint8)[:, None] * 20
        out[name] = (pixels, labels)
    return out


def write_binary(folder, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (pixels, labels) in data.items():
        records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], pixels], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())


def write_python(folder, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (pixels, labels) in data.items():
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": pixels, b"filenames": [b"x.png"]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def check_cifar(task: tasks.Task, data, build_host: bool = False) -> None:
    n = 4 * 5
    assert task.train_x.shape == (n, 3, 32, 32) and task.val_x.shape == (4, 3, 32, 32)
    assert task.train_y.tolist() == sum((data[k][1] for k in tasks.CIFAR_TRAIN), [])
    assert task.val_y.tolist() == data[tasks.CIFAR_TEST][1]
    # Channel-major layout: channel 0 (normalised) is still a monotone function of the label.
    red = task.train_x[:, 0].mean(dim=(1, 2))
    assert torch.equal(red.argsort(stable=True), task.train_y.argsort(stable=True))
    assert task.train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    torch.testing.assert_close(task.train_x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    assert task.host_kwargs == {"in_channels": 3, "num_classes": 10, "width": 16, "depth": 4}
    if build_host:
        x, _ = next(task.batches("train", 5, gen(0)))
        assert CNNHost(**task.host_kwargs)(x).shape == (5, 10)


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"])
def test_cifar10_binary_format(tmp_path, sub):
    data = fake_cifar()
    write_binary(tmp_path / sub, data)
    check_cifar(load_task("cifar10", tmp_path), data, build_host=sub == "")


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar10_python_format(tmp_path, sub):
    data = fake_cifar()
    write_python(tmp_path / sub, data)
    check_cifar(load_task("cifar10", str(tmp_path)), data)


class Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def eval_payload(marker) -> bytes:
    """Hand-built protocol-2 pickle: GLOBAL builtins.eval called on a string that runs a shell command."""
    code = f"__import__('os').system('touch {marker}')".encode()
    return pickle.PROTO + b"\x02cbuiltins\neval\n(V" + code + b"\ntR."


PAYLOADS = {
    "in-dict": lambda marker: pickle.dumps({b"data": Exploit(marker), b"labels": [0]}, protocol=2),
    "top-level": lambda marker: pickle.dumps(Exploit(marker), protocol=2),
    "builtins-eval": eval_payload,
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_cifar10_refuses_malicious_pickles(tmp_path, payload):
    write_python(tmp_path, fake_cifar())
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_3").write_bytes(payload(marker))
    with pytest.raises(TaskDataError, match="data_batch_3 is not a safe .*refused"):
        tasks.cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_malicious_payloads_are_live_under_plain_pickle(tmp_path, payload):
    """Negative control: the refusal above is what stands between these bytes and a shell."""
    marker = tmp_path / "pwned"
    try:
        pickle.loads(payload(marker))
    except Exception:
        pass  # the in-dict payload runs its command before the dict is even built
    assert marker.exists()


def test_cifar10_reads_numpy1_spelling_of_array_globals(tmp_path):
    """The real files were pickled by numpy 1.x (`numpy.core.multiarray`); numpy 2 says `numpy._core`."""
    data = fake_cifar()
    write_python(tmp_path, data)
    for name in NAMES:
        path = tmp_path / name
        path.write_bytes(path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert b"cnumpy.core.multiarray\n_reconstruct" in (tmp_path / NAMES[0]).read_bytes()
    check_cifar(tasks.cifar10(tmp_path), data)


def test_cifar10_missing_data_says_what_to_put_where(tmp_path):
    with pytest.raises(TaskDataError) as err:
        tasks.cifar10(tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "data_batch_1.bin" in msg and "cifar-10-batches-py" in msg
    assert "cs.toronto.edu" in msg and "--data-dir" in msg
    # An existing but incomplete directory lists where it looked and notices an unextracted archive.
    (tmp_path / "data_batch_1.bin").write_bytes(b"\0" * 3073)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"")
    with pytest.raises(TaskDataError, match="cifar-10-batches-bin.*tar xzf cifar-10-binary.tar.gz"):
        tasks.cifar10(tmp_path)


def test_cifar10_rejects_truncated_binary(tmp_path):
    write_binary(tmp_path, fake_cifar())
    (tmp_path / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(TaskDataError, match="3073-byte records"):
        tasks.cifar10(tmp_path)


# ----------------------------------------------------------------------------- registry


def test_load_task_unknown_name_lists_the_options():
    with pytest.raises(TaskDataError) as err:
        load_task("imagenet")
    for name in tasks.TASKS:
        assert name in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("name", ["cifar10", "textfile"])
def test_load_task_needs_data_dir_for_user_data(name):
    with pytest.raises(TaskDataError, match="--data-dir"):
        load_task(name)


def test_default_task_is_registered():
    assert tasks.DEFAULT_TASK in tasks.TASKS


def test_the_task_names_the_options_accept_are_exactly_the_tasks_that_exist():
    from engine.config import TASK_NAMES, RunConfig

    assert set(TASK_NAMES) == set(tasks.TASKS)
    with pytest.raises(ValueError, match="digits"):
        RunConfig(task="bogus")
