"""What predicting, evaluating and training all need: the device, normalization, logits in batches, accuracy.

Inference does not depend on training: the trainer imports from here, never the other way round.
"""

import torch

from .data import CIFAR10_NORMALIZATION, CLASSES, WALKTHROUGH_NORMALIZATION

NORMALIZATIONS = {"walkthrough": WALKTHROUGH_NORMALIZATION, "cifar10": CIFAR10_NORMALIZATION}
DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> tuple[str, ...]:
    """The DEVICES this machine has ("auto" and "cpu" always): what a person may be offered."""
    present = ["auto", "cpu"]
    if torch.cuda.is_available():
        present.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        present.append("mps")
    return tuple(present)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def normalization_tensors(normalization: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as 1 x 3 x 1 x 1 tensors, ready to broadcast over a batch."""
    return (torch.tensor(normalization["mean"], device=device).view(1, 3, 1, 1),
            torch.tensor(normalization["std"], device=device).view(1, 3, 1, 1))


def normalize(images: torch.Tensor, normalization: dict | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float, exactly as ToTensor() then Normalize(mean, std).

    normalization: its mean and std as lists, or as the tensors normalization_tensors() made (the training
    loop makes them once: at batch 4, making them at every step cost as much as a tenth of the step).
    """
    mean, std = normalization_tensors(normalization, images.device) if isinstance(normalization, dict) else normalization
    return images.float().div_(255).sub_(mean).div_(std)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, normalization: dict, batch_size: int = 1000) -> torch.Tensor:
    """Logits for a uint8 tensor of images, in large batches (the model's train/eval mode is put back after)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(normalize(images[i : i + batch_size].to(device), normalization)) for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, len(CLASSES))


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, normalization: dict) -> float:
    logits = predict_logits(model, images, normalization)
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()
