import numpy as np
import pytest
import torch
from PIL import Image

from vcex.data import load_dataset, load_image_folder, read_images
from vcex.errors import DatasetNotFoundError, InputError


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def gray(value, size=(6, 5)):
    return np.full(size, value, dtype=np.uint8)


def make_classes(root, per_class=5, classes=("cat", "dog"), rgb=False):
    """Class k's images have the constant pixel value 40 * k + i (i: the image's number), so labels can be read
    back from the pixels."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            array = gray(40 * k + i)
            if rgb:
                array = np.stack([array, array // 2, np.zeros_like(array)], -1)
            save(root / name / f"{i:03d}.png", array)
    return root


def test_read_images_values_shapes_and_order(tmp_path):
    save(tmp_path / "b.png", gray(255))
    save(tmp_path / "a.png", gray(51))
    (tmp_path / "a.png.bak").write_bytes((tmp_path / "a.png").read_bytes())  # not an image suffix: skipped
    (tmp_path / "readme.txt").write_text("not an image")
    images = read_images(tmp_path)
    assert images.shape == (2, 1, 6, 5) and images.dtype == torch.float32
    assert torch.allclose(images[:, 0, 0, 0], torch.tensor([0.2, 1.0]))  # sorted by name: a, b
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 255
    both = read_images([tmp_path / "a.png", save(tmp_path / "red.png", rgb)])
    assert both.shape == (2, 3, 6, 5)  # one colour image makes both RGB
    assert torch.allclose(both[1, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(both[0, :, 0, 0], torch.full((3,), 0.2))
    assert read_images([tmp_path / "red.png"], channels=1).shape == (1, 1, 6, 5)


def test_read_images_resizes_and_refuses_mixed_sizes(tmp_path):
    save(tmp_path / "small.png", gray(100, (6, 5)))
    save(tmp_path / "large.png", gray(100, (12, 10)))
    with pytest.raises(InputError, match=r"small.png is 5x6 pixels but .*large.png is 10x12 .*pass size=\(H, W\)"):
        read_images(tmp_path)
    images = read_images(tmp_path, size=(8, 7))
    assert images.shape == (2, 1, 8, 7)
    assert torch.allclose(images, torch.full_like(images, 100 / 255), atol=1e-6)  # constant stays constant
    assert read_images(tmp_path, size=4).shape == (2, 1, 4, 4)
    with pytest.raises(InputError, match="size must be"):
        read_images(tmp_path, size=(0, 4))


def test_sixteen_bit_grayscale_keeps_its_depth(tmp_path):
    path = save(tmp_path / "deep.png", np.full((4, 4), 1000, dtype=np.uint16))
    assert Image.open(path).mode.startswith("I")
    image = read_images(path)
    assert image.shape == (1, 1, 4, 4)
    assert torch.allclose(image, torch.full_like(image, 1000 / 65535))  # 8 bits would round it to 0 or 1/255


def test_bad_files_and_arguments_name_the_problem(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_images(tmp_path / "missing")
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        read_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="cannot read image .*broken.png"):
        read_images(tmp_path)
    with pytest.raises(InputError, match="channels must be 1"):
        read_images(tmp_path / "broken.png", channels=2)
    with pytest.raises(InputError, match="no image files given"):
        read_images([])


def test_class_folders_give_labels_by_sorted_name_and_a_seeded_stratified_split(tmp_path):
    root = make_classes(tmp_path / "pets", per_class=10, classes=("dog", "cat", "owl"))
    every = load_image_folder(root)
    assert every.class_names == ["cat", "dog", "owl"] and len(every) == 30 and every.split == "all"
    # the pixel value says which folder an image came from: 40 * (its position in ("dog", "cat", "owl")) + i
    folder_of = (every.images[:, 0, 0, 0] * 255).round().long() // 40
    assert torch.equal(folder_of, torch.tensor([1, 0, 2])[every.labels])  # cat is label 0 but made second
    train, test = load_image_folder(root, "train"), load_image_folder(root, "test", test_fraction=0.2)
    assert len(train) == 24 and len(test) == 6
    assert torch.equal(torch.bincount(test.labels), torch.tensor([2, 2, 2]))  # stratified
    seen = {round(float(v) * 255) for v in torch.cat([train.images, test.images])[:, 0, 0, 0]}
    assert len(seen) == 30  # a partition: every image once
    assert torch.equal(load_image_folder(root, "test").images, test.images)  # seeded: the same every time
    assert not torch.equal(load_image_folder(root, "test", seed=1).images, test.images)
    assert test.info["layout"] == "class folders" and test.name == "folder:pets"


def test_train_and_test_folders_are_used_as_given(tmp_path):
    root = tmp_path / "split"
    make_classes(root / "train", per_class=4, rgb=True)
    make_classes(root / "test", per_class=2, rgb=True)
    train, test = load_dataset(f"folder:{root}", "train"), load_dataset(f"folder:{root}", "test")
    assert (len(train), len(test)) == (8, 4) and train.images.shape[1:] == (3, 6, 5)
    assert train.class_names == test.class_names == ["cat", "dog"]
    assert torch.equal(test.labels.sort().values, torch.tensor([0, 0, 1, 1]))  # in a seeded, mixed order
    assert not torch.equal(train.labels, train.labels.sort().values)
    assert torch.equal(load_dataset(f"folder:{root}", "train").labels, train.labels)
    make_classes(root / "test", per_class=1, classes=("cat", "dog", "fox"))
    with pytest.raises(InputError, match="fox"):
        load_image_folder(root, "test")


def test_channels_are_decided_for_the_whole_folder(tmp_path):
    root = make_classes(tmp_path / "mixed", per_class=6)
    rgb = np.zeros((6, 5, 3), np.uint8)
    save(root / "dog" / "999.png", rgb)  # one colour image among grayscale ones
    train, test = load_image_folder(root, "train"), load_image_folder(root, "test")
    assert train.images.shape[1] == test.images.shape[1] == 3


def test_bad_folders_say_what_layout_is_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="one subfolder of images per class"):
        load_image_folder(tmp_path / "missing")
    make_classes(tmp_path / "one", classes=("cat",))
    with pytest.raises(InputError, match="at least two classes"):
        load_image_folder(tmp_path / "one")
    root = make_classes(tmp_path / "empty-class")
    (root / "fox").mkdir()
    with pytest.raises(InputError, match="fox holds no image files"):
        load_image_folder(root)
    with pytest.raises(InputError, match="unknown split"):
        load_image_folder(tmp_path / "one", "validation")
    with pytest.raises(InputError, match="test_fraction"):
        load_image_folder(tmp_path / "one", "test", test_fraction=1.0)
    with pytest.raises(InputError, match="folder:PATH"):
        load_dataset("cifar")
