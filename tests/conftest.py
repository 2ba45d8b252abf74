"""Shared tiny models and data: everything trains in seconds, nothing is downloaded."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from vcex.data import load_dataset
from vcex.data.profiles import override_profile
from vcex.models import VAE, Classifier, SmallCNN
from vcex.models.training import classification_loss, fit


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's cache: each session gets its own VCEX_HOME."""
    monkeypatch.setenv("VCEX_HOME", str(tmp_path_factory.getbasetemp() / "vcex-home"))


@pytest.fixture
def shrink_profile():
    """Smaller recipes for a test: ``shrink_profile("mnist", zoo_epochs={"cnn": 2, ...})`` replaces those fields of
    the family's :class:`~vcex.data.profiles.DatasetProfile` (vcex.data.profiles.override_profile) until the test
    ends. Returns the profile in force."""
    with contextlib.ExitStack() as stack:
        yield lambda family, **changes: stack.enter_context(override_profile(family, **changes))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a shared
    2-core machine extra threads only fight other processes, and tiny ops stall between thread pools."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist_small() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1,000 training and 200 test MNIST images (embedded subset)."""
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    return train.images[:1000], train.labels[:1000], test.images[:200], test.labels[:200]


@pytest.fixture(scope="session")
def tiny_classifier(mnist_small) -> Classifier:
    """A SmallCNN trained for two epochs on 1,000 images (~90% test accuracy, a few seconds)."""
    images, labels, _, _ = mnist_small
    torch.manual_seed(0)
    model = Classifier(SmallCNN(), (0.1307,), (0.3081,), input_shape=(1, 28, 28))
    fit(model, classification_loss(model), images, labels, epochs=2, lr=3e-3, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_vae(mnist_small) -> VAE:
    """A small VAE (8-d latent) trained briefly on 1,000 images."""
    images, labels, _, _ = mnist_small
    torch.manual_seed(0)
    model = VAE(latent_dim=8, width=16)
    fit(model, lambda x, _y, _g: model.loss(x), images, labels, epochs=6, lr=3e-3, batch_size=64, progress=False)
    return model.eval()


class LinearLatent(nn.Module):
    """An exactly invertible toy latent model: images are a sigmoid of a linear map of z."""

    def __init__(self, latent_dim: int = 4, shape: tuple[int, int, int] = (1, 8, 8)) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.shape = shape
        self.decoder = nn.Linear(latent_dim, int(torch.tensor(shape).prod()))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.logit(images.flatten(1).clamp(1e-4, 1 - 1e-4)) - self.decoder.bias
        return torch.linalg.lstsq(self.decoder.weight, logits.T).solution.T

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(latents)).view(-1, *self.shape)


def make_bar_folder(root, side=16, per_class=12):
    """Two classes of noisy bars (horizontal, vertical) as PNG files in root/horizontal and root/vertical."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("horizontal", "vertical"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.uniform(0, 60, (side, side))
            row = 4 + i % (side - 8)
            if name == "horizontal":
                image[row : row + 3] = 255
            else:
                image[:, row : row + 3] = 255
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def bar_folder():
    """A maker of image folders of the ImageFolder layout: make(root, side=16, per_class=12) -> root."""
    return make_bar_folder
