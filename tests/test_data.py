"""Data: the IDX reader on good and bad files, Fashion-MNIST and MNIST-1D, the loader."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from onecycle.data import DataError, Loader, load_fashion_mnist, load_mnist1d, read_idx
from onecycle.data.datasets import find_fashion_mnist
from onecycle.errors import ConfigError


def _idx(path, arr: np.ndarray, *, magic=None, compress=True, cut=0):
    head = magic or bytes([0, 0, 0x08, arr.ndim])
    data = head + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes()
    data = data[: len(data) - cut] if cut else data
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(_idx(tmp_path / "a.gz", a)), a)
    assert np.array_equal(read_idx(_idx(tmp_path / "a", a, compress=False)), a)


def test_read_idx_rejects_bad_files(tmp_path):
    a = np.zeros((5, 4), dtype=np.uint8)
    with pytest.raises(DataError, match="magic"):
        read_idx(_idx(tmp_path / "m.gz", a, magic=b"\x01\x02\x08\x02"))
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(_idx(tmp_path / "t.gz", a, cut=3))
    with pytest.raises(DataError, match="checksum"):
        read_idx(_idx(tmp_path / "c.gz", a), expect_sha256="0" * 64)
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


def test_explicit_folder_without_the_files_is_an_error(tmp_path):
    assert find_fashion_mnist(tmp_path) is None
    with pytest.raises(DataError, match=str(tmp_path)):
        load_fashion_mnist(tmp_path)


def _fashion_available():
    return find_fashion_mnist() is not None


def test_fashion_mnist_loads(in_ci):
    if not _fashion_available():
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI (.ci/run installs it)")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    d = load_fashion_mnist()
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train.dtype == torch.int64 and set(d.y_train.unique().tolist()) == set(range(10))
    assert abs(d.x_train.mean().item()) < 1e-2 and abs(d.x_train.std().item() - 1) < 1e-2


def test_a_corrupted_copy_of_fashion_mnist_is_refused(tmp_path, in_ci):
    if not _fashion_available():
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI")
        pytest.skip("Fashion-MNIST not installed")
    src = find_fashion_mnist()
    for f in os.listdir(src):
        data = gzip.decompress((src / f).read_bytes())
        if f.startswith("t10k-labels"):
            data = data[:-1] + bytes([(data[-1] + 1) % 10])  # one label changed
        (tmp_path / f).write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="checksum"):
        load_fashion_mnist(tmp_path)


def test_mnist1d_is_generated_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ONECYCLE_CACHE", str(tmp_path))
    d = load_mnist1d()
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert (tmp_path / "mnist1d-seed42.npz").exists()
    again = load_mnist1d()
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)


def test_loader_shuffles_per_epoch_reproducibly_and_covers_the_data():
    x, y = torch.arange(100.0), torch.arange(100)
    dl = Loader(x, y, 16, seed=3)
    e0 = torch.cat([yb for _, yb in dl])
    e1 = torch.cat([yb for _, yb in dl])
    assert sorted(e0.tolist()) == list(range(100)) and not torch.equal(e0, e1)
    dl.set_epoch(0)
    assert torch.equal(torch.cat([yb for _, yb in dl]), e0)
    assert len(Loader(x, y, 16, drop_last=True)) == 6 and len(dl) == 7


def test_loader_resumes_mid_epoch_with_augmentation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.arange(64)
    full = Loader(x, y, 8, seed=1, crop_pad=2, hflip=True)
    ref = [(xb.clone(), yb.clone()) for xb, yb in full]
    part = Loader(x, y, 8, seed=1, crop_pad=2, hflip=True)
    it = iter(part)
    for _ in range(3):
        next(it)
    state = part.state_dict()
    resumed = Loader(x, y, 8, seed=1, crop_pad=2, hflip=True)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == 5
    for (a, b), (c, d) in zip(rest, ref[3:]):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_augmentation_is_a_crop_and_flip():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = next(iter(Loader(x, torch.zeros(200), 200, crop_pad=1, hflip=True)))[0]
    assert out.shape == x.shape
    variants = {tuple(o.flatten().tolist()) for o in out}
    assert len(variants) > 9  # several shifts, and flips
    assert any(torch.equal(o, x[0]) for o in out)


def test_loader_shards_by_rank():
    x, y = torch.arange(10.0), torch.arange(10)
    shards = [
        torch.cat([yb for _, yb in Loader(x, y, 2, rank=r, world_size=2, seed=0)]) for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 11}, "batch_size"),
        ({"crop_pad": 2}, "crop_pad/hflip"),
        ({"rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_loader_validation(kw, name):
    args = {"batch_size": 2, **kw}
    with pytest.raises(ConfigError) as e:
        Loader(torch.zeros(10, 3), torch.zeros(10), **args)
    assert e.value.name == name


def test_download_is_verified_and_atomic(tmp_path, monkeypatch, in_ci):
    """With no network in tests, the download is simulated by copying local files; a
    corrupted transfer is refused and leaves no file under the real name."""
    import urllib.request

    from onecycle.data import datasets

    src = find_fashion_mnist()
    if src is None:
        if in_ci:
            pytest.fail("Fashion-MNIST must be installed in CI")
        pytest.skip("Fashion-MNIST not installed")
    monkeypatch.setattr(datasets, "find_fashion_mnist", lambda root=None: None)
    fetched = []

    def fake_retrieve(url, dest, corrupt=False):
        name = url.rsplit("/", 1)[1]
        fetched.append(name)
        data = (src / name).read_bytes()
        if corrupt and name.startswith("t10k-images"):
            data = gzip.compress(gzip.decompress(data)[:-100])
        open(dest, "wb").write(data)

    monkeypatch.setattr(urllib.request, "urlretrieve", lambda u, d: fake_retrieve(u, d, True))
    with pytest.raises(DataError, match="t10k-images"):
        load_fashion_mnist(tmp_path / "dl", download=True)
    assert not (tmp_path / "dl" / "t10k-images-idx3-ubyte.gz").exists()
    monkeypatch.setattr(urllib.request, "urlretrieve", fake_retrieve)
    d = load_fashion_mnist(tmp_path / "dl", download=True)
    assert d.x_test.shape == (10000, 1, 28, 28) and len(fetched) >= 4


def test_held_out_sets_aside_the_same_samples_on_every_rank():
    x, y = torch.arange(100.0), torch.arange(100)
    full = Loader(x, y, 5, seed=3)
    _, held_all = full.held_out(2)
    held_ids = {int(v) for _, yb in held_all for v in yb}
    assert held_ids == {int(v) for _, yb in list(full)[:2] for v in yb}
    per_rank = [Loader(x, y, 5, seed=3, rank=r, world_size=2).held_out(2) for r in range(2)]
    first_20 = {int(v) for _, yb in list(Loader(x, y, 10, seed=3))[:2] for v in yb}
    assert {int(v) for _, h in per_rank for _, yb in h for v in yb} == first_20
    held = {int(v) for _, h in per_rank for _, yb in h for v in yb}
    for e in range(3):  # every epoch: the ranks split the other 80 samples between them
        seen = [{int(v) for _, yb in _epoch(rest, e) for v in yb} for rest, _ in per_rank]
        assert seen[0].isdisjoint(seen[1]) and len(seen[0]) == 40
        assert seen[0] | seen[1] == set(range(100)) - held


def test_held_out_refuses_to_hold_back_everything():
    with pytest.raises(ConfigError, match="n_batches"):
        Loader(torch.arange(10.0), torch.arange(10), 5).held_out(2)


def _epoch(loader: Loader, e: int) -> list:
    loader.set_epoch(e)
    return list(loader)
