"""The data side of the reference recipe (kalviny/MSDNet-PyTorch ``dataloader.py``), pinned.

The reference builds its pipelines with torchvision:

- CIFAR-10 / CIFAR-100 training: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
  ``ToTensor()``, ``Normalize(mean, std)``; test: ``ToTensor()``, ``Normalize(mean, std)``.
- ImageNet training: ``RandomResizedCrop(224)``, ``RandomHorizontalFlip()``; test: ``Resize(256)``,
  ``CenterCrop(224)``; then ``Normalize`` with ImageNet's mean and std.
- ``--use_valid`` (``--splits train val test``): 5,000 CIFAR (50,000 ImageNet) training images
  form the validation split.

Each test states one of these facts and checks it on what `msdnet_tf.data` actually returns.
Nothing is downloaded: the CIFAR and ImageNet files are small synthetic ones written here.
"""

import pickle

import cv2
import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import data
from msdnet_tf.data.cifar import CIFAR_FORMATS
from msdnet_tf.data.splits import holdout

# The reference's ``transforms.Normalize(mean=..., std=...)`` constants, from its dataloader.py.
REFERENCE_NORMALIZE = {
    "cifar10": ((0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
PER_BATCH = 4  # images per pickled CIFAR batch file written here


@pytest.fixture(autouse=True)
def no_real_caches(tmp_path, monkeypatch):
    """Keep this machine's Keras and TFDS caches out of every test."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)


def _coordinate_image():
    """A 32x32 RGB image whose every pixel is non-zero and unique: R = row + 1, G = column + 1."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.full_like(rows, 200)], axis=-1).astype(np.uint8)


def _write_cifar_folder(root, name, test_image=None):
    """The extracted python-version folder of `name`, with PER_BATCH images per batch file."""
    fmt = CIFAR_FORMATS[name]
    folder = root / fmt.folder
    folder.mkdir(parents=True)
    for i, member in enumerate(fmt.train + fmt.test):
        rng = np.random.default_rng(i)
        rows = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        if member in fmt.test and test_image is not None:
            rows[0] = test_image.transpose(2, 0, 1).reshape(-1)  # channel-major, as CIFAR
        batch = {b"data": rows, fmt.label_key: list(range(PER_BATCH))}
        (folder / member).write_bytes(pickle.dumps(batch, protocol=2))
    return str(root)


# ------------------------------------------------------------------------------------------
# Normalisation: ToTensor() then Normalize(mean, std), with the reference's constants
# ------------------------------------------------------------------------------------------


def test_normalisation_constants_are_the_references():
    assert data.CIFAR_STATS["cifar10"] == REFERENCE_NORMALIZE["cifar10"]
    assert data.CIFAR_STATS["cifar100"] == REFERENCE_NORMALIZE["cifar100"]
    assert data.IMAGENET_STATS == REFERENCE_NORMALIZE["imagenet"]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_test_images_are_normalised_as_to_tensor_then_normalize(tmp_path, name):
    """Test images are not transformed (no crop, no flip) and become (pixel / 255 - mean) / std,
    the reference's ``ToTensor()`` (pixels to [0, 1]) followed by ``Normalize(mean, std)``."""
    image = _coordinate_image()
    splits = data.load_dataset(
        name, _write_cifar_folder(tmp_path, name, image), batch_size=2, validation_size=1
    )
    mean, std = (np.array(v, np.float64) for v in REFERENCE_NORMALIZE[name])
    assert (splits.mean, splits.std) == REFERENCE_NORMALIZE[name]
    images, _ = next(iter(splits.test_dataset()))
    expected = (image / 255.0 - mean) / std
    np.testing.assert_allclose(images.numpy()[0], expected, atol=1e-5)
    np.testing.assert_allclose(splits.normalize(image), expected, atol=1e-5)


# ------------------------------------------------------------------------------------------
# CIFAR training augmentation: RandomCrop(32, padding=4) + RandomHorizontalFlip()
# ------------------------------------------------------------------------------------------


def _window_of(padded, output):
    """Every (row offset, column offset, mirrored) whose 32x32 window of `padded` is `output`."""
    found = []
    for dy in range(padded.shape[0] - 31):
        for dx in range(padded.shape[1] - 31):
            window = padded[dy : dy + 32, dx : dx + 32]
            for mirrored, candidate in ((False, window), (True, window[:, ::-1])):
                if np.array_equal(candidate, output):
                    found.append((dy, dx, mirrored))
    return found


def test_cifar_augmentation_is_a_window_of_the_zero_padded_image_possibly_mirrored(tmp_path):
    """RandomCrop(32, padding=4): a 32x32 window of the 40x40 zero-padded image, at any of the
    9 x 9 offsets; RandomHorizontalFlip(): mirrored or not. Each augmented output is exactly one
    (offset, flip) of the constructed image, and over many keys every row offset, every column
    offset and both flip states occur, the flip about half of the time."""
    splits = data.load_dataset(
        "cifar10", _write_cifar_folder(tmp_path, "cifar10"), validation_size=0
    )
    image = _coordinate_image()
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    assert padded.shape == (40, 40, 3)
    seen = []
    for i in range(200):
        key = tf.constant([i // 20, i % 20], tf.int64)  # as the pipeline's [seed-epoch word, index]
        output = splits.train_transform(tf.constant(image), key).numpy()
        assert output.shape == (32, 32, 3) and output.dtype == np.uint8
        matches = _window_of(padded, output)
        assert len(matches) == 1, (i, matches)  # unique pixels: exactly one window fits
        seen.append(matches[0])
    assert {dy for dy, _, _ in seen} == set(range(9))
    assert {dx for _, dx, _ in seen} == set(range(9))
    flips = sum(mirrored for _, _, mirrored in seen)
    assert 70 <= flips <= 130
    # The same key gives the same augmentation (stateless), another key another one.
    key = tf.constant([3, 7], tf.int64)
    again = splits.train_transform(tf.constant(image), key).numpy()
    assert _window_of(padded, again) == [seen[3 * 20 + 7]]


def test_cifar_evaluation_transform_leaves_images_unchanged(tmp_path):
    splits = data.load_dataset(
        "cifar10", _write_cifar_folder(tmp_path, "cifar10"), validation_size=0
    )
    image = _coordinate_image()
    np.testing.assert_array_equal(np.asarray(splits.eval_transform(tf.constant(image))), image)


# ------------------------------------------------------------------------------------------
# ImageNet evaluation: Resize(256) + CenterCrop(224)
# ------------------------------------------------------------------------------------------


def test_imagenet_evaluation_is_resize_256_then_centre_crop_224(tmp_path):
    """A 256x320 image (shorter side already 256) with a 16-pixel red frame around a green
    centre: CenterCrop(224) cuts 16 rows off the top and bottom and 48 columns off each side,
    so no red is left; a 17-pixel frame would leave one red row at the top and bottom."""
    for split in ("train", "val"):
        (tmp_path / split / "n01").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(tmp_path / "train" / "n01" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    for border in (16, 17):
        bgr = np.zeros((256, 320, 3), np.uint8)
        bgr[...] = (0, 0, 255)
        bgr[border:-border, border:-border] = (0, 255, 0)
        cv2.imwrite(str(tmp_path / "val" / "n01" / f"frame{border}.png"), bgr)
    splits = data.load_dataset("imagenet", str(tmp_path), batch_size=2, validation_size=1)
    assert splits.image_size == (224, 224)
    crops = splits.test_images()
    assert crops.shape == (2, 224, 224, 3)
    assert np.all(crops[0] == (0, 255, 0))  # frame16: RGB green everywhere
    assert np.all(crops[1][0] == (255, 0, 0)) and np.all(crops[1][-1] == (255, 0, 0))
    assert np.all(crops[1][1:-1] == (0, 255, 0))


# ------------------------------------------------------------------------------------------
# The validation hold-out
# ------------------------------------------------------------------------------------------


def test_default_holdout_sizes_are_the_references(tmp_path):
    """5,000 CIFAR and 50,000 ImageNet training images by default (``validation_size`` unset or
    -1, as ``config.data.validation_size`` is): the small synthetic sets here are too small for
    those, and the error names the default that was asked for."""
    assert data.DEFAULT_VALIDATION_SIZE == {"cifar10": 5000, "cifar100": 5000, "imagenet": 50000}
    root = _write_cifar_folder(tmp_path, "cifar10")
    for default in (None, -1):
        with pytest.raises(ValueError, match="Received: validation_size=5000"):
            data.load_dataset("cifar10", root, validation_size=default)
    (tmp_path / "imagenet" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "n01").mkdir(parents=True)
    for split in ("train", "val"):
        path = tmp_path / "imagenet" / split / "n01" / "0.png"
        cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="Received: validation_size=50000"):
        data.load_dataset("imagenet", str(tmp_path / "imagenet"))


def test_cifar_holdout_is_5000_random_training_images():
    """The CIFAR hold-out: 5,000 of the 50,000 training images, the rest train.

    The reference (``dataloader.py`` with ``--use_valid``) takes
    ``train_set_index = torch.randperm(50000)`` right after ``torch.manual_seed(args.seed)`` and
    uses ``train_set_index[-5000:]`` as validation, ``[:-5000]`` as training: the last 5,000
    entries of a random permutation, that is 5,000 uniformly random training images (not the
    last 5,000 images of the files).

    Ours equals it in size and in kind (a uniformly random subset), not in which images:
    - the permutation is ``numpy.random.default_rng(split_seed).permutation(50000)`` and its
      first 5,000 entries are held out, so the set differs from any torch permutation;
    - it depends on ``split_seed`` (0) only, not on the training seed, whereas the reference's
      depends on ``--seed``;
    - the reference's validation loader reads the training set object, so its validation images
      get the training augmentation (random crop and flip) and come in a random order; ours are
      not augmented (the test transform) and come in file order.
    """
    indices = np.arange(50000)
    train_x, train_y, val_x, val_y = holdout(indices, indices, 5000, split_seed=0)
    assert (len(train_x), len(val_x)) == (45000, 5000)
    assert not set(train_x.tolist()) & set(val_x.tolist())
    assert np.array_equal(np.sort(np.concatenate([train_x, val_x])), indices)
    np.testing.assert_array_equal(val_x, val_y)  # images and labels held out together
    assert np.all(np.diff(val_x) > 0) and np.all(np.diff(train_x) > 0)  # file order kept
    # A random subset spread over all five batch files, not the last 5,000 images.
    per_file = np.bincount(val_x // 10000, minlength=5)
    assert np.all((per_file > 800) & (per_file < 1200))
    expected = np.sort(np.random.default_rng(0).permutation(50000)[:5000])
    np.testing.assert_array_equal(val_x, expected)
    other = holdout(indices, indices, 5000, split_seed=1)[2]
    assert not np.array_equal(other, val_x)


def test_holdout_rejects_sizes_outside_the_training_set():
    indices = np.arange(10)
    for size in (10, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"Received: validation_size={size}"):
            holdout(indices, indices, size, split_seed=0)
    assert len(holdout(indices, indices, 0, split_seed=0)[2]) == 0
