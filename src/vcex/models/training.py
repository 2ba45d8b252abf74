"""Training loops for the zoo's models: one minibatch loop, several losses."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vcex.checks import check_positive_finite
from vcex.models.state import evaluates
from vcex.progress import progress_bar


def fit(
    model: nn.Module,
    step_loss: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
    device: str | torch.device | None = None,
) -> nn.Module:
    """Adam over shuffled minibatches; ``step_loss(images, labels, generator)`` returns a scalar. With ``device``
    the model moves there and each minibatch is sent there (the shuffling stream stays the CPU's)."""
    lr = check_positive_finite("lr", lr)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if device is not None:
        model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * -(-len(images) // batch_size), pct_start=0.15
    )
    model.train()
    bar = progress_bar(total=epochs, desc=desc, enabled=progress, unit="epoch")
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total, count = 0.0, 0
        for batch in order.split(batch_size):
            batch_images, batch_labels = images[batch], labels[batch]
            if device is not None:
                batch_images, batch_labels = batch_images.to(device), batch_labels.to(device)
            loss = step_loss(batch_images, batch_labels, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        bar.update(1)
        bar.set_postfix(loss=f"{total / count:.4g}")
    bar.close()
    model.eval()
    return model


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill): light augmentation."""
    if max_shift <= 0:
        return images
    padded = F.pad(images, [max_shift] * 4)
    n, _, h, w = images.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    # one offset per batch keeps this a single slice; batches are shuffled, so shifts vary per image over epochs
    return padded[:, :, offsets[0] : offsets[0] + h, offsets[1] : offsets[1] + w]


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float, radius: int = 2) -> torch.Tensor:
    """Blur (N, C, H, W) images with a Gaussian of standard deviation ``sigma`` pixels, a float or one
    per image (N,); sigma 0 leaves an image unchanged. Edges are replicated."""
    n, c, _, _ = images.shape
    sigma = torch.as_tensor(sigma, dtype=images.dtype).expand(n)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.pow(2) / (2 * sigma.clamp_min(1e-3).pow(2)[:, None]))  # (N, K)
    kernel = kernel / kernel.sum(1, keepdim=True)
    kernel = kernel.repeat_interleave(c, 0)  # one kernel per (image, channel)
    x = F.pad(images, [radius] * 4, mode="replicate").reshape(1, n * c, images.shape[2] + 2 * radius, -1)
    x = F.conv2d(x, kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(x, kernel[:, None, :, None], groups=n * c)
    return x.reshape(images.shape)


def random_blur(images: torch.Tensor, max_sigma: float, generator: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """Blur a random ``share`` of the images, each with sigma drawn uniformly from [0, ``max_sigma``)
    pixels: augmentation that teaches a reader to see attributes through a generator's softness."""
    if max_sigma <= 0 or share <= 0:
        return images
    n = len(images)
    sigma = torch.rand(n, generator=generator) * max_sigma
    sigma = torch.where(torch.rand(n, generator=generator) < share, sigma, torch.zeros(()))
    return gaussian_blur(images, sigma)


def classification_loss(network: nn.Module, max_shift: int = 0) -> Callable:
    """Cross-entropy of ``network`` (a :class:`Classifier`) with optional random shifts."""

    def step(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(network(random_shift(images, max_shift, generator)), labels)

    return step


@torch.no_grad()
@evaluates("model")
def accuracy(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> float:
    """Share of images whose argmax logit equals the label."""
    correct = 0
    for chunk, chunk_labels in zip(images.split(batch_size), labels.split(batch_size)):
        correct += int((model(chunk).argmax(1) == chunk_labels).sum())
    return correct / max(len(images), 1)


def class_autoencoder_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, per_class_batch: int = 32
) -> Callable:
    """Each step feeds every class's autoencoder a batch of its own class (sampled with replacement)
    and the shared autoencoder a batch of everything: one batched matmul per layer."""
    members = [(labels == k).nonzero().flatten() for k in range(model.num_classes)]
    flat = images.flatten(1)

    def step(batch_images: torch.Tensor, batch_labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        picks = [m[torch.randint(len(m), (per_class_batch,), generator=generator)] for m in members]
        shared = torch.randint(len(flat), (per_class_batch,), generator=generator)
        batch = torch.stack([flat[p] for p in picks] + [flat[shared]])
        return F.mse_loss(model.run(batch), batch, reduction="sum") / batch.shape[0] / per_class_batch

    return step
