"""Input pipelines: digits split and statistics, determinism, CIFAR and folder readers, errors.

Everything runs on the bundled digits or on small synthetic files written here; nothing is
downloaded.
"""

import io
import os
import pickle
import sys
import tarfile
import types

import cv2
import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import data
from msdnet_tf.data.cifar import CIFAR_FORMATS
from msdnet_tf.data.digits import digits_images


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(batch_size=32)


@pytest.fixture(autouse=True)
def no_real_caches(tmp_path, monkeypatch):
    """Keep this machine's Keras and TFDS caches out of every test."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)


def _first(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


# ------------------------------------------------------------------------------------------
# Digits
# ------------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    assert digits.sizes == {"train": 1078, "validation": 269, "test": 450}
    _, labels = digits_images(8)
    parts = data.digits_split_indices(labels)
    assert sum(len(p) for p in parts) == len(labels) == 1797
    assert len(set(np.concatenate(parts).tolist())) == 1797
    per_class = np.bincount(labels)
    for part, fraction in zip(parts, data.DIGITS_FRACTIONS):
        counts = np.bincount(labels[part], minlength=10)
        assert np.all(np.abs(counts - fraction * per_class) <= 1)
    # Pinned: the split must not change between machines, runs or library versions.
    np.testing.assert_array_equal(parts[2][:8], [3, 6, 14, 15, 19, 24, 26, 39])
    assert (int(parts[1].sum()), int(parts[2].sum())) == (239013, 415998)
    other_seed = data.load_digits(seed=5)
    np.testing.assert_array_equal(other_seed.test_y, digits.test_y)
    np.testing.assert_array_equal(other_seed.test_x, digits.test_x)


def test_digits_normalisation_constants_match_the_training_split(digits):
    x = digits.train_x.astype(np.float64) / 255.0
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), digits.mean, atol=5e-4)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), digits.std, atol=5e-4)
    z = digits.normalize(digits.train_x)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=2e-3)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=2e-3)
    np.testing.assert_allclose(digits.denormalize(z), x, atol=1e-5)
    assert digits.class_names == [str(d) for d in range(10)]


def test_shapes_dtypes_steps_and_eval_pipelines(digits):
    batches = list(digits.train_for_epoch(0))
    assert len(batches) == digits.steps_per_epoch == 1078 // 32
    images, labels = batches[0]
    assert images.shape == (32, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    for split, dataset, x, y in (
        ("test", digits.test_dataset(), digits.test_x, digits.test_y),
        ("validation", digits.validation_dataset(), digits.val_x, digits.val_y),
    ):
        got = list(dataset)
        assert sum(len(b) for _, b in got) == digits.sizes[split]  # the remainder is kept
        np.testing.assert_allclose(got[0][0].numpy(), digits.normalize(x[:32]), atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([b.numpy() for _, b in got]), y)
    raw, raw_labels = digits.test_arrays()
    assert raw.dtype == np.uint8 and raw.shape == (450, 32, 32, 3)
    np.testing.assert_array_equal(raw_labels, digits.test_y)


def test_drop_remainder_false_keeps_every_training_image():
    splits = data.load_dataset("digits", batch_size=100, drop_remainder=False)
    labels = np.concatenate([y.numpy() for _, y in splits.train_for_epoch(0)])
    assert splits.steps_per_epoch == 11 and len(labels) == 1078
    np.testing.assert_array_equal(np.sort(labels), np.sort(splits.train_y))


def test_training_order_and_augmentation_depend_on_seed_and_epoch_only(digits):
    first, first_labels = _first(digits.train_for_epoch(3))
    again, again_labels = _first(data.load_digits(batch_size=32).train_for_epoch(3))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_labels, again_labels)
    assert not np.array_equal(first, _first(digits.train_for_epoch(4))[0])
    assert not np.array_equal(first, _first(data.load_digits(32, seed=1).train_for_epoch(3))[0])
    # A run resumed at epoch 3 sees what the uninterrupted run sees in its 4th epoch.
    stream = digits.train_dataset(0).skip(3 * digits.steps_per_epoch)
    np.testing.assert_array_equal(_first(stream)[0], first)
    np.testing.assert_array_equal(_first(digits.train_dataset(3))[0], first)
    # The epoch may be a tensor (flat_map over epochs) ...
    by_tensor = tf.data.Dataset.range(3, 4).flat_map(digits.train_for_epoch)
    np.testing.assert_array_equal(_first(by_tensor)[0], first)
    # ... and the batch size regroups the same augmented images without changing them.
    double = _first(data.load_digits(batch_size=64).train_for_epoch(3))[0]
    np.testing.assert_array_equal(double[:32], first)


def test_digits_augmentation_translates_without_flipping(digits):
    plain = data.load_digits(batch_size=1078, augment=False)
    images, labels = _first(plain.train_for_epoch(0))
    augmented, labels2 = _first(digits.train_for_epoch(0).unbatch().batch(1078))
    n = len(labels2)  # drop_remainder with batch 32 keeps 1,056 of 1,078
    np.testing.assert_array_equal(labels[:n], labels2)
    # Same order; augmented images are shifts of at most 2 pixels, never mirror images.
    a, b = plain.denormalize(images[:n]), digits.denormalize(augmented)
    assert not np.allclose(a, b)
    for original, shifted in zip(a[:40], b[:40]):
        assert _shift_of(original, shifted, 2)


def _shift_of(original, moved, pad):
    """Whether `moved` is `original` translated by at most `pad` pixels (zero fill)."""
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
    h, w = original.shape[:2]
    windows = [
        padded[dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
    ]
    return min(np.abs(win - moved).max() for win in windows) < 1e-5


def test_image_size_argument_resizes_digits():
    small = data.load_dataset("digits", batch_size=8, image_size=16)
    assert _first(small.train_for_epoch(0))[0].shape == (8, 16, 16, 3)
    assert small.test_images().shape == (450, 16, 16, 3)


# ------------------------------------------------------------------------------------------
# CIFAR archives, written in the exact pickle format
# ------------------------------------------------------------------------------------------

_PER_BATCH = 20


def _cifar_members(name):
    fmt = CIFAR_FORMATS[name]
    members = {}
    for i, member in enumerate(fmt.train + fmt.test):
        rng = np.random.default_rng(i)
        members[member] = {
            b"batch_label": f"batch {i}".encode(),
            b"data": rng.integers(0, 256, (_PER_BATCH, 3072), dtype=np.uint8),
            fmt.label_key: rng.integers(0, fmt.num_classes, _PER_BATCH).tolist(),
        }
    if name == "cifar100":
        members["meta"] = {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
    else:
        members["batches.meta"] = {b"label_names": [n.encode() for n in data.CIFAR10_CLASSES]}
    return members


def _write_archive(path, folder, members, raw=None):
    """A .tar.gz with `folder/<member>` pickles (or raw bytes from `raw`)."""
    raw = raw or {}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for member, content in members.items():
            blob = raw.get(member, pickle.dumps(content, protocol=2))
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _write_folder(path, members, raw=None):
    raw = raw or {}
    os.makedirs(path)
    for member, content in members.items():
        with open(os.path.join(path, member), "wb") as f:
            f.write(raw.get(member, pickle.dumps(content, protocol=2)))


def _write_cifar(root, name, as_archive=True, members=None, raw=None):
    fmt = CIFAR_FORMATS[name]
    members = members or _cifar_members(name)
    if as_archive:
        _write_archive(os.path.join(root, fmt.archive), fmt.folder, members, raw)
    else:
        _write_folder(os.path.join(root, fmt.folder), members, raw)
    return members


def _hwc(row):
    return row.reshape(3, 32, 32).transpose(1, 2, 0)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("as_archive", [True, False])
def test_cifar_reader(tmp_path, name, as_archive):
    members = _write_cifar(str(tmp_path), name, as_archive)
    splits = data.load_dataset(name, str(tmp_path), batch_size=8, validation_size=10)
    n_train = len(CIFAR_FORMATS[name].train) * _PER_BATCH
    assert splits.sizes == {"train": n_train - 10, "validation": 10, "test": _PER_BATCH}
    test = members["test_batch" if name == "cifar10" else "test"]
    np.testing.assert_array_equal(splits.test_x[3], _hwc(test[b"data"][3]))
    key = b"labels" if name == "cifar10" else b"fine_labels"
    np.testing.assert_array_equal(splits.test_y, test[key])
    assert splits.test_y.dtype == np.int32 and splits.test_x.dtype == np.uint8
    expected = data.CIFAR10_CLASSES if name == "cifar10" else [f"c{i}" for i in range(100)]
    assert splits.class_names == expected and splits.num_classes == len(expected)
    assert splits.mean == data.CIFAR_STATS[name][0] and splits.std == data.CIFAR_STATS[name][1]
    images, labels = _first(splits.train_for_epoch(0))
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert os.path.basename(splits.source) in (
        CIFAR_FORMATS[name].archive,
        CIFAR_FORMATS[name].folder,
    )


@pytest.mark.parametrize(
    "where",
    [
        "keras3_folder", "keras3_archive", "keras2_folder", "keras2_archive", "data_dir_is_archive",
        "data_dir_is_folder",
    ],
)  # fmt: skip
def test_cifar_is_found_in_every_usual_place(tmp_path, monkeypatch, where):
    cache = tmp_path / "keras_home" / "datasets"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    members = _cifar_members("cifar10")
    folder = "cifar-10-batches-py"
    paths = {
        "keras3_folder": cache / f"{folder}-target" / folder,
        "keras3_archive": cache / f"{folder}-target_archive",
        "keras2_folder": cache / folder,
        "keras2_archive": cache / f"{folder}.tar.gz",
        "data_dir_is_archive": tmp_path / "mine" / "c10.tgz",
        "data_dir_is_folder": tmp_path / "mine" / "batches",
    }
    path = str(paths[where])
    if where.endswith("folder"):
        _write_folder(path, members)
    else:
        _write_archive(path, folder, members)
    data_dir = path if where.startswith("data_dir") else None
    splits = data.load_dataset("cifar10", data_dir, batch_size=8, validation_size=5)
    assert splits.source == path
    np.testing.assert_array_equal(splits.test_x[0], _hwc(members["test_batch"][b"data"][0]))


def test_cifar_holdout_is_fixed_disjoint_and_may_be_empty(tmp_path):
    members = _write_cifar(str(tmp_path), "cifar10")
    everything = np.concatenate([members[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    rows = {row.tobytes() for row in everything}
    a = data.load_dataset("cifar10", str(tmp_path), validation_size=30, seed=0)
    b = data.load_dataset("cifar10", str(tmp_path), validation_size=30, seed=7)
    np.testing.assert_array_equal(a.val_x, b.val_x)  # independent of the training seed
    train = {x.transpose(2, 0, 1).tobytes() for x in a.train_x}
    val = {x.transpose(2, 0, 1).tobytes() for x in a.val_x}
    assert len(train) == 70 and len(val) == 30 and not train & val and train | val == rows
    other = data.load_dataset("cifar10", str(tmp_path), validation_size=30, split_seed=1)
    assert not np.array_equal(other.val_x, a.val_x)
    every = data.load_dataset("cifar10", str(tmp_path), validation_size=0)
    assert every.sizes == {"train": 100, "validation": 0, "test": 20}
    assert list(every.validation_dataset()) == []
    assert every.validation_dataset().element_spec[0].shape.as_list() == [None, 32, 32, 3]


def test_cifar_augmentation_is_pad4_crop_and_flip(tmp_path):
    _write_cifar(str(tmp_path), "cifar10")
    common = dict(validation_size=0, batch_size=100)
    plain = data.load_dataset("cifar10", str(tmp_path), augment=False, **common)
    augmented = data.load_dataset("cifar10", str(tmp_path), **common)
    a = plain.denormalize(_first(plain.train_for_epoch(2))[0])
    b = augmented.denormalize(_first(augmented.train_for_epoch(2))[0])
    flipped = 0
    for original, moved in zip(a, b):
        if _shift_of(original, moved, 4):
            continue
        assert _shift_of(original[:, ::-1], moved, 4)
        flipped += 1
    assert 25 <= flipped <= 75


def test_cifar_from_a_prepared_tfds_copy(tmp_path, monkeypatch):
    root = tmp_path / "tfds"
    (root / "cifar10" / "3.0.2").mkdir(parents=True)
    (root / "cifar10" / "3.0.2" / "dataset_info.json").write_text("{}")
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.arange(50) % 10),
        "test": (rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10)),
    }
    calls = []

    class Builder:
        info = types.SimpleNamespace(
            features={"label": types.SimpleNamespace(names=data.CIFAR10_CLASSES)}
        )

        def __init__(self, name, data_dir):
            calls.append((name, data_dir))

        def as_dataset(self, split, batch_size, as_supervised):
            assert batch_size == -1 and as_supervised
            return arrays[split]

    fake = types.ModuleType("tensorflow_datasets")
    fake.builder = lambda name, data_dir: Builder(name, data_dir)
    fake.as_numpy = lambda x: x
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setenv("TFDS_DATA_DIR", str(root))
    splits = data.load_dataset("cifar10", validation_size=5)
    assert calls == [("cifar10", str(root))]
    assert splits.sizes == {"train": 45, "validation": 5, "test": 10}
    np.testing.assert_array_equal(splits.test_x, arrays["test"][0])
    assert splits.source == str(root / "cifar10")


def test_missing_cifar_names_every_path_and_what_to_put_there(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(data.DataNotFoundError) as error:
        data.load_dataset("cifar10", nowhere)
    text = str(error.value)
    datasets = os.path.join(str(tmp_path / "kh"), "datasets")
    for path in (
        nowhere,
        os.path.join(nowhere, "cifar-10-batches-py"),
        os.path.join(nowhere, "cifar-10-python.tar.gz"),
        os.path.join(datasets, "cifar-10-batches-py-target", "cifar-10-batches-py"),
        os.path.join(datasets, "cifar-10-batches-py.tar.gz"),
        os.path.join(str(tmp_path / "home"), ".keras", "datasets", "cifar-10-batches-py"),
        os.path.join(str(tmp_path / "home"), "tensorflow_datasets", "cifar10"),
    ):
        assert f"\n  {path}" in text, path
    assert "Put cifar-10-python.tar.gz" in text and f"at {nowhere}" in text
    assert "--config.data.data_dir" in text
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(data.DataNotFoundError, match="Put cifar-100-python.tar.gz"):
        data.load_dataset("cifar100")


def _truncated(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, content in members.items():
            blob = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def _with(member, **changes):
    def change(members):
        members[member].update({k.encode(): v for k, v in changes.items()})
        return members

    return change


@pytest.mark.parametrize(
    "case, as_archive, change, raw, match",
    [
        ("garbage", True, None, b"\x1f\x8b not a gzip", r"Cannot read .*cifar-10-python\.tar\.gz"),
        ("truncated", True, None, "truncated", r"Cannot read .*cifar-10-python\.tar\.gz"),
        ("bad pickle", False, None, {"data_batch_3": b"\x80\x02garbage"},
         r"Cannot unpickle .*data_batch_3"),
        ("bad pickle in archive", True, None, {"test_batch": b"nope"},
         r"Cannot unpickle .*cifar-10-python\.tar\.gz:cifar-10-batches-py/test_batch"),
        ("wrong size", False, _with("data_batch_2", data=np.zeros((20, 3000), np.uint8)),
         None, r"data_batch_2 must hold an \(N, 3072\) uint8 .*Received: shape \(20, 3000\)"),
        ("float data", False, _with("data_batch_2", data=np.zeros((20, 3072))), None,
         r"data_batch_2 must hold .*dtype float64"),
        ("label count", True, _with("test_batch", labels=[1, 2]), None,
         r"test_batch must hold one label per image \(20\)"),
        ("label too big", False, _with("test_batch", labels=[10] + [0] * 19), None,
         r"test_batch must be in \[0, 10\)\. Received: 1 out-of-range labels, e\.g\. \[10\]"),
        ("negative label", True, _with("data_batch_5", labels=[-1] * 20), None,
         r"data_batch_5 must be in \[0, 10\).*\[-1\]"),
        ("no labels", False, lambda m: {**m, "data_batch_1": {b"data": m["data_batch_1"][b"data"]}},
         None, r"data_batch_1 lacks the entry b'labels'"),
        ("not a dict", False, lambda m: {**m, "data_batch_4": [1, 2]}, None,
         r"data_batch_4 must hold a pickled dict. Received: list"),
        ("missing member", True, lambda m: {k: v for k, v in m.items() if k != "test_batch"},
         None, r"cifar-10-python\.tar\.gz is incomplete: it lacks test_batch"),
    ],
)  # fmt: skip
def test_corrupt_cifar_files_are_named(tmp_path, case, as_archive, change, raw, match):
    members = _cifar_members("cifar10")
    if change is not None:
        members = change(members)
    if raw in ("truncated",) or isinstance(raw, bytes):
        blob = _truncated(members) if raw == "truncated" else raw
        (tmp_path / "cifar-10-python.tar.gz").write_bytes(blob)
    else:
        _write_cifar(str(tmp_path), "cifar10", as_archive, members, raw)
    with pytest.raises(data.CorruptDataError, match=match):
        data.load_dataset("cifar10", str(tmp_path))


def test_cifar100_fine_labels_are_range_checked(tmp_path):
    members = _cifar_members("cifar100")
    members["test"][b"fine_labels"][4] = 100
    members["test"][b"coarse_labels"] = [0] * _PER_BATCH  # ignored: fine labels are read
    _write_cifar(str(tmp_path), "cifar100", True, members)
    with pytest.raises(data.CorruptDataError, match=r"test must be in \[0, 100\)"):
        data.load_dataset("cifar100", str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="mnist"), "Received: 'mnist'"),
        (dict(name="cifar10", validation_size=500), "validation_size=500"),
        (dict(name="cifar10", image_size=64), "image_size=64"),
        (dict(name="cifar10", batch_size=0), "batch_size=0"),
        (dict(name="digits", validation_size=100), "validation_size=100"),
        (dict(name="digits", image_size=4), "image_size=4"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    _write_cifar(str(tmp_path), "cifar10", as_archive=False)
    with pytest.raises(ValueError, match=match):
        data.load_dataset(data_dir=str(tmp_path), **kwargs)


# ------------------------------------------------------------------------------------------
# ImageNet-style folders
# ------------------------------------------------------------------------------------------


def _framed(size, border):
    """A green square with a red `border`-pixel frame (BGR for OpenCV)."""
    image = np.zeros((size, size, 3), np.uint8)
    image[...] = (0, 0, 255)
    image[border:-border, border:-border] = (0, 255, 0)
    return image


def _write_imagenet(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 1)):
        for cls in ("n02", "n01"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{i}.JPEG"), image)
    # A PNG named .JPEG (ImageNet has some): decoded by content. 37 = round(32 * 256 / 224), so
    # the 32x32 centre crop drops exactly the 2-pixel frame.
    png = cv2.imencode(".png", _framed(37, 2))[1].tobytes()
    (root / "val" / "n02" / "framed.JPEG").write_bytes(png)


def test_imagenet_folders(tmp_path):
    _write_imagenet(tmp_path)
    splits = data.load_dataset(
        "imagenet", str(tmp_path), batch_size=2, validation_size=2, image_size=32
    )
    assert splits.class_names == ["n01", "n02"] and splits.num_classes == 2
    assert splits.sizes == {"train": 6, "validation": 2, "test": 3}
    assert splits.mean == data.IMAGENET_STATS[0]
    images, labels = _first(splits.train_for_epoch(0))
    assert images.shape == (2, 32, 32, 3) and labels.dtype == np.int32
    np.testing.assert_array_equal(images, _first(splits.train_for_epoch(0))[0])
    test_images, test_labels = _first(splits.test_dataset())
    assert test_images.shape == (2, 32, 32, 3)
    raw, raw_labels = splits.test_arrays()
    assert raw.shape == (3, 32, 32, 3) and raw.dtype == np.uint8
    framed = list(splits.test_x).index(str(tmp_path / "val" / "n02" / "framed.JPEG"))
    assert raw_labels[framed] == 1
    assert np.all(raw[framed] == (0, 255, 0))  # RGB green everywhere: the frame is cropped off
    np.testing.assert_array_equal(raw_labels, splits.test_y)


def test_imagenet_errors(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="needs data_dir"):
        data.load_dataset("imagenet")
    with pytest.raises(data.DataNotFoundError, match=r"no folder .*empty.train\. Put"):
        data.load_dataset("imagenet", str(tmp_path / "empty"))
    _write_imagenet(tmp_path)
    (tmp_path / "val" / "n99").mkdir()
    with pytest.raises(data.CorruptDataError, match=r"Received: \['n99'\]"):
        data.load_dataset("imagenet", str(tmp_path), validation_size=0)
    (tmp_path / "bare" / "train" / "n01").mkdir(parents=True)
    with pytest.raises(data.DataNotFoundError, match="holds no images"):
        data.load_dataset("imagenet", str(tmp_path / "bare"))
