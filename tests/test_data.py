"""Input pipelines: digits split and statistics, determinism, CIFAR and folder readers, errors."""

import io
import os
import pickle
import tarfile

import cv2
import numpy as np
import pytest

from msdnet_tf import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(batch_size=32)


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    assert digits.sizes == {"train": 1078, "validation": 269, "test": 450}
    _, labels = data._digits_images(8)
    parts = data.digits_split_indices(labels)
    assert sum(len(p) for p in parts) == len(labels) == 1797
    assert len(set(np.concatenate(parts).tolist())) == 1797
    for part, fraction in zip(parts, data.DIGITS_FRACTIONS):
        counts = np.bincount(labels[part], minlength=10)
        np.testing.assert_allclose(counts / np.bincount(labels), fraction, atol=0.02)
    again = data.digits_split_indices(labels)
    for a, b in zip(parts, again):
        np.testing.assert_array_equal(a, b)


def test_digits_normalisation_constants_match_the_training_split(digits):
    x = digits.train_x.astype(np.float64) / 255.0
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), digits.mean, atol=1e-3)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), digits.std, atol=1e-3)
    z = digits.normalize(digits.train_x)
    assert abs(z.mean()) < 1e-2 and abs(z.std() - 1) < 1e-2
    np.testing.assert_allclose(digits.denormalize(z), x, atol=1e-5)


def test_shapes_dtypes_and_eval_pipeline(digits):
    images, labels = next(iter(digits.train_for_epoch(0)))
    assert images.shape == (32, 32, 32, 3) and images.dtype == "float32"
    assert labels.dtype == "int32"
    test = list(digits.test_dataset())
    assert sum(len(y) for _, y in test) == 450  # no remainder dropped
    np.testing.assert_allclose(test[0][0].numpy(), digits.normalize(digits.test_x[:32]), atol=1e-6)
    np.testing.assert_array_equal(test[0][1].numpy(), digits.test_y[:32])


def test_training_order_and_augmentation_depend_on_seed_and_epoch_only(digits):
    first = next(iter(digits.train_for_epoch(3)))[0].numpy()
    again = next(iter(data.load_digits(batch_size=32).train_for_epoch(3)))[0].numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, next(iter(digits.train_for_epoch(4)))[0].numpy())
    other_seed = data.load_digits(batch_size=32, seed=1)
    assert not np.array_equal(first, next(iter(other_seed.train_for_epoch(3)))[0].numpy())
    # a resumed stream starting at epoch 3 equals the uninterrupted one from its 4th epoch
    stream = digits.train_dataset(0).skip(3 * digits.steps_per_epoch)
    np.testing.assert_array_equal(next(iter(stream))[0].numpy(), first)


def test_digits_augmentation_translates_without_flipping(digits):
    plain = data.load_digits(batch_size=1078, augment=False)
    images, labels = next(iter(plain.train_for_epoch(0)))
    augmented, labels2 = next(iter(digits.train_for_epoch(0).unbatch().batch(1078)))
    n = len(labels2)  # drop_remainder with batch 32 keeps 1,056 of 1,078
    np.testing.assert_array_equal(labels[:n], labels2)
    # Same order; augmented images are shifts of at most 2 pixels, never mirror images.
    a, b = plain.denormalize(images.numpy()[:n]), digits.denormalize(augmented.numpy())
    assert not np.allclose(a, b)
    for original, shifted in zip(a[:30], b[:30]):
        padded = np.pad(original, ((2, 2), (2, 2), (0, 0)))
        windows = [padded[dy : dy + 32, dx : dx + 32] for dy in range(5) for dx in range(5)]
        assert min(np.abs(w - shifted).max() for w in windows) < 1e-5


def test_image_size_argument_resizes_digits():
    small = data.load_dataset("digits", batch_size=8, image_size=16)
    assert next(iter(small.train_for_epoch(0)))[0].shape == (8, 16, 16, 3)


# ------------------------------------------------------------------------------------------
# CIFAR archives, written in the exact pickle format
# ------------------------------------------------------------------------------------------


def _batch(n, num_classes, label_key, seed):
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, n).tolist(),
    }


def _write_cifar(root, name, as_archive, label_offset=0):
    archive, folder, train_members, test_members, key, classes = data._CIFAR_LAYOUT[name]
    members = {m: _batch(20, classes, key, i) for i, m in enumerate(train_members + test_members)}
    members[test_members[0]][key][0] += label_offset
    if name == "cifar100":
        members["meta"] = {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}
    else:
        members["batches.meta"] = {b"label_names": [n.encode() for n in data.CIFAR10_CLASSES]}
    if as_archive:
        with tarfile.open(os.path.join(root, archive), "w:gz") as tar:
            for member, content in members.items():
                blob = pickle.dumps(content)
                info = tarfile.TarInfo(f"{folder}/{member}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        os.makedirs(os.path.join(root, folder))
        for member, content in members.items():
            with open(os.path.join(root, folder, member), "wb") as f:
                pickle.dump(content, f)
    return members


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("as_archive", [True, False])
def test_cifar_reader(tmp_path, name, as_archive):
    members = _write_cifar(str(tmp_path), name, as_archive)
    splits = data.load_dataset(name, str(tmp_path), batch_size=8, validation_size=10)
    n_train = 100 if name == "cifar10" else 20
    assert splits.sizes == {"train": n_train - 10, "validation": 10, "test": 20}
    test = members["test_batch" if name == "cifar10" else "test"]
    first = test[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(splits.test_x[0], first)
    key = b"labels" if name == "cifar10" else b"fine_labels"
    np.testing.assert_array_equal(splits.test_y, test[key])
    assert splits.class_names[:2] == (
        ["airplane", "automobile"] if name == "cifar10" else ["c0", "c1"]
    )
    images, _ = next(iter(splits.train_for_epoch(0)))
    assert images.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(splits.mean, data.CIFAR_STATS[name][0])


def test_missing_cifar_names_every_path_and_what_to_put_there(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(data.DataNotFoundError) as error:
        data.load_dataset("cifar10", str(tmp_path / "nowhere"))
    text = str(error.value)
    assert "cifar-10-python.tar.gz" in text and str(tmp_path / "nowhere") in text
    assert os.path.join(".keras", "datasets") in text and "--data_dir" in text


def test_corrupt_archive_and_bad_labels(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(data.CorruptDataError, match="Cannot read .*cifar-10-python.tar.gz"):
        data.load_dataset("cifar10", str(tmp_path))
    other = tmp_path / "labels"
    other.mkdir()
    _write_cifar(str(other), "cifar10", as_archive=False, label_offset=10)
    with pytest.raises(data.CorruptDataError, match=r"must be in \[0, 10\).*Received"):
        data.load_dataset("cifar10", str(other))


def test_unknown_dataset_and_bad_validation_size(tmp_path):
    with pytest.raises(ValueError, match="Received: 'mnist'"):
        data.load_dataset("mnist")
    _write_cifar(str(tmp_path), "cifar10", as_archive=False)
    with pytest.raises(ValueError, match="validation_size=500"):
        data.load_dataset("cifar10", str(tmp_path), validation_size=500)


# ------------------------------------------------------------------------------------------
# ImageNet-style folders
# ------------------------------------------------------------------------------------------


def test_imagenet_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("n01", "n02"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{i}.JPEG"), image)
    splits = data.load_dataset("imagenet", str(tmp_path), batch_size=2, validation_size=2,
                               image_size=32)  # fmt: skip
    assert splits.class_names == ["n01", "n02"]
    assert splits.sizes == {"train": 6, "validation": 2, "test": 4}
    images, labels = next(iter(splits.train_for_epoch(0)))
    assert images.shape == (2, 32, 32, 3)
    test_images, _ = next(iter(splits.test_dataset()))
    assert test_images.shape == (2, 32, 32, 3)
    assert splits.test_images().shape == (4, 32, 32, 3)
    with pytest.raises(data.DataNotFoundError, match="No folder .*train"):
        data.load_dataset("imagenet", str(tmp_path / "empty"))
