"""See inside the network: every layer's activations, the filters, one convolution worked out by hand,
why the network chose a class (saliency and occlusion, with Captum), and its predictions epoch by epoch.

Everything takes one uint8 image, 3 x 32 x 32 as the dataset stores it, and returns plain CPU tensors and
numbers. The model passed in is often the one the web app shares between sessions, so nothing here changes
it: no hooks, no requires_grad switched on its parameters, its train/eval mode left alone.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from captum.attr import Occlusion, Saliency
from PIL import Image

from .checkpoint import load_model
from .data import CLASSES, Split
from .inference import normalize, predict_logits
from .model import LeNet5

# What activations() returns, in the order the image flows through, with each stage's shape.
STAGE_SHAPES = {
    "input": (3, 32, 32), "conv1": (6, 28, 28), "pool1": (6, 14, 14), "conv2": (16, 10, 10), "pool2": (16, 5, 5),
    "fc1": (120,), "fc2": (84,), "logits": (10,), "probabilities": (10,), "answer": (10,),
}
# The convolutions a worked example can show, and the stage each one reads from.
CONV_INPUTS = {"conv1": "input", "conv2": "pool1"}
KERNEL = 5
GREY = 0.5  # the colour occlusion paints over the image: mid grey, before normalization


def pixels(image32: Image.Image) -> torch.Tensor:
    """A 32x32 RGB PIL image (lenet.predict.model_input makes one from any photo) as uint8 3 x 32 x 32."""
    if image32.mode != "RGB" or image32.size != (32, 32):
        raise ValueError(f"expected a 32x32 RGB image, got {image32.mode} {image32.size}")
    return torch.from_numpy(np.array(image32, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _network_input(model: torch.nn.Module, image: torch.Tensor, normalization: dict) -> torch.Tensor:
    """The normalized 1 x 3 x 32 x 32 batch, on the model's device, attached to no graph."""
    if image.dtype != torch.uint8 or tuple(image.shape) != (3, 32, 32):
        raise ValueError(f"expected a uint8 image of shape 3 x 32 x 32, got {image.dtype} {tuple(image.shape)}")
    device = next(model.parameters()).device
    return normalize(image.unsqueeze(0).to(device), normalization)


# ---- activations and filters ----------------------------------------------------------------------------------


@torch.no_grad()
def activations(model: LeNet5, image: torch.Tensor, normalization: dict) -> dict[str, torch.Tensor]:
    """Every stage's output for one image, without the batch dimension, shapes as in STAGE_SHAPES.

    "input" is the normalized image the network reads; conv1 and conv2 are after their ReLU; "logits" are
    exactly what model.logits(input) gives (LeNet5.stages runs its own operations). "answer" holds the probabilities
    the model answers with: "probabilities" themselves, or for a model with test-time flips those of the image and
    its mirror image together.
    """
    x = _network_input(model, image, normalization)
    stages = model.stages(x)
    probabilities = stages["logits"].softmax(1)
    answer = model(x).softmax(1) if model.test_flips and not model.training else probabilities
    result = {"input": x, **stages, "probabilities": probabilities, "answer": answer}
    return {name: tensor[0].detach().cpu() for name, tensor in result.items()}


@dataclass
class Filters:
    conv1_weight: torch.Tensor  # 6 x 3 x 5 x 5: six colour filters that look at the image
    conv1_bias: torch.Tensor  # 6
    conv2_weight: torch.Tensor  # 16 x 6 x 5 x 5: sixteen filters over conv1's six pooled maps
    conv2_bias: torch.Tensor  # 16


def filters(model: LeNet5) -> Filters:
    """Copies of the two convolutions' weights and biases (copies: the caller may scale them for display)."""

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().cpu().clone()

    return Filters(copy(model.conv1.weight), copy(model.conv1.bias), copy(model.conv2.weight), copy(model.conv2.bias))


# ---- one convolution by hand -------------------------------------------------------------------------------------


@dataclass
class WorkedExample:
    """One output value of a convolution, computed as multiply, add, add the bias, ReLU."""

    layer: str  # "conv1" or "conv2"
    channel: int  # which filter, which output map
    row: int  # the position in the output map; the patch starts at the same row and column of the input
    col: int
    patch: torch.Tensor  # C x 5 x 5 input values under the filter: normalized pixels (conv1) or pool1's values (conv2)
    weights: torch.Tensor  # C x 5 x 5, the filter
    products: torch.Tensor  # patch * weights, element by element
    total: float  # the sum of the products
    bias: float
    pre_relu: float  # total + bias
    post_relu: float  # max(0, pre_relu)
    map_value: float  # what the network itself computed at this position, for comparison


def worked_example(model: LeNet5, image: torch.Tensor, normalization: dict, layer: str = "conv1",
                   channel: int = 0, row: int = 0, col: int = 0) -> WorkedExample:
    """Redo one value of conv1's (or conv2's) output map by hand; post_relu equals map_value to about 1e-6."""
    if layer not in CONV_INPUTS:
        raise ValueError(f"layer must be one of {', '.join(CONV_INPUTS)}, got {layer!r}")
    conv = getattr(model, layer)
    channels, height, width = STAGE_SHAPES[layer]
    if not (0 <= channel < channels and 0 <= row < height and 0 <= col < width):
        raise ValueError(f"{layer} has {channels} maps of {height} x {width}; got channel {channel}, row {row}, col {col}")
    stages = activations(model, image, normalization)
    patch = stages[CONV_INPUTS[layer]][:, row : row + KERNEL, col : col + KERNEL].clone()
    weights = conv.weight[channel].detach().cpu().clone()
    products = patch * weights
    # Summed in double precision: the hand-made sum should not differ from the network's by more than rounding.
    total = products.double().sum().item()
    bias = conv.bias[channel].item()
    pre_relu = total + bias
    return WorkedExample(layer, channel, row, col, patch, weights, products, total, bias, pre_relu, max(pre_relu, 0.0),
                         stages[layer][channel, row, col].item())


# ---- why did it say that? ---------------------------------------------------------------------------------------


def top_class(model: LeNet5, image: torch.Tensor, normalization: dict) -> int:
    return int(activations(model, image, normalization)["answer"].argmax())


def _target(model: LeNet5, image: torch.Tensor, normalization: dict, target: int | None) -> int:
    """The class to explain: the given one (checked), else the network's answer."""
    if target is None:
        return top_class(model, image, normalization)
    if not 0 <= target < len(CLASSES):
        raise ValueError(f"target must be a class index from 0 to {len(CLASSES) - 1}, got {target}")
    return target


def saliency_map(model: LeNet5, image: torch.Tensor, normalization: dict, target: int | None = None) -> torch.Tensor:
    """32 x 32: how strongly the target class's logit reacts to each pixel of the normalized input (|gradient|,
    the largest of R, G, B); target None: the network's answer.

    Plain gradients (Captum's Saliency) rather than Integrated Gradients: one backward pass, so the page can
    redraw it for every class at once, and no baseline to argue about (to a network a grey or black image is
    not "nothing"). The logit rather than the probability: the probability's gradient mixes in every other
    class and vanishes when the network is sure.
    """
    target = _target(model, image, normalization, target)
    # Gradients even when the caller runs under inference_mode or no_grad.
    with torch.inference_mode(False), torch.enable_grad():
        # A fresh input of our own that wants its gradient: nothing is switched on the shared model's weights.
        x = _network_input(model, image, normalization).requires_grad_()
        gradient = Saliency(model).attribute(x, target=target, abs=True)
    return gradient[0].amax(0).detach().cpu()


def occlusion_map(model: LeNet5, image: torch.Tensor, normalization: dict, target: int | None = None,
                  window: int = 8, stride: int = 2) -> torch.Tensor:
    """32 x 32: how much the target class's probability drops when a grey window x window square hides each pixel.

    Captum's Occlusion slides the square in steps of stride and gives each pixel the mean drop of the squares
    that covered it. Positive: hiding it lowers the probability (the evidence was there); negative: raises it.
    """
    target = _target(model, image, normalization, target)
    x = _network_input(model, image, normalization)
    grey = normalize(torch.full_like(image, round(GREY * 255)).unsqueeze(0).to(x.device), normalization)

    def class_probabilities(batch: torch.Tensor) -> torch.Tensor:
        return model(batch).softmax(1)

    with torch.no_grad():
        # All window positions in one or two batches: 169 windows of batch 1 would cost 169 calls.
        drop = Occlusion(class_probabilities).attribute(
            x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=grey, target=target,
            perturbations_per_eval=128,
        )
    return drop[0, 0].detach().cpu()  # the square covers all three channels alike


# ---- the time machine: the same images through every epoch's checkpoint -------------------------------------------


def panel(split: Split, seed: int = 0) -> list[int]:
    """Indices of ten images of the split, one per class in CLASSES order, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(CLASSES)):
        of_class = (split.labels == label).nonzero().flatten()
        chosen.append(int(of_class[torch.randint(len(of_class), (1,), generator=generator)]))
    return chosen


def classify_over_epochs(checkpoints: list[Path | str], images: torch.Tensor) -> torch.Tensor:
    """Probabilities, epochs x images x 10: the uint8 images classified by each checkpoint in turn."""
    rows = []
    for path in checkpoints:
        model, meta = load_model(path)
        rows.append(predict_logits(model, images, meta["normalization"]).softmax(1))
    return torch.stack(rows) if rows else torch.empty(0, len(images), len(CLASSES))
