"""LeNet-5 exactly as in the PyTorch CIFAR-10 walkthrough, and its layer summary."""

import torch
import torch.nn.functional as F
from torch import nn

from .words import N_


class LeNet5(nn.Module):
    """conv(3->6, 5x5) -> pool -> conv(6->16, 5x5) -> pool -> fc 120 -> fc 84 -> fc 10 (logits)."""

    # named_parameters()'s names, in its order
    PARAMETER_NAMES = tuple(f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2", "fc3") for kind in ("weight", "bias"))

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        # Test-time flips: in eval mode, the logits of each image and of its mirror image, averaged. No parameter:
        # the checkpoint's recipe says whether a model predicts this way (lenet.checkpoint sets it when loading).
        self.test_flips = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.test_flips and not self.training:
            # A mirrored CIFAR-10 photo is as likely a photo as the photo. Two passes of the batch, the mirror's first:
            # one pass of both (twice the batch), or the mirror's second, left the trainer's peak memory 70 to 90 MB
            # higher (glibc's heap, measured with ru_maxrss around a frugal run).
            mirrored = self.logits(x.flip(3))
            return mirrored.add_(self.logits(x)).div_(2)
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network itself on a batch, in training and evaluation alike (forward adds the test-time flips)."""
        # The walkthrough's pool(relu(conv(x))), computed as relu(pool(conv(x))): max-pooling and ReLU commute
        # exactly (both forward and backward), and ReLU on the pooled map touches 4x fewer numbers.
        # max_pool_2x2 is self.pool's function, faster on CPU (see there).
        x = F.relu(max_pool_2x2(self.conv1(x)))
        x = F.relu(max_pool_2x2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """forward, one stage at a time: every intermediate result by name, the logits last.

        The walkthrough's order (ReLU, then pooling) with self.pool itself, which gives forward's numbers to the bit:
        ReLU and max-pooling commute exactly, and max_pool_2x2 is max_pool2d's function (tests check both).
        A method rather than forward hooks because the web app shares one model between sessions, and hooks
        registered by one session would also catch another's calls.
        """
        conv1 = F.relu(self.conv1(x))
        pool1 = self.pool(conv1)
        conv2 = F.relu(self.conv2(pool1))
        pool2 = self.pool(conv2)
        fc1 = F.relu(self.fc1(torch.flatten(pool2, 1)))
        fc2 = F.relu(self.fc2(fc1))
        return {"conv1": conv1, "pool1": pool1, "conv2": conv2, "pool2": pool2, "fc1": fc1, "fc2": fc2, "logits": self.fc3(fc2)}


class _MaxPool2x2(torch.autograd.Function):
    """F.max_pool2d(x, 2, 2) on CPU from strided maxima, with max_pool2d's own backward.

    ATen's CPU max_pool2d walks each window element by element: 1.6 to 2.4 ms at batch 128 for conv1's output on
    one thread, a fifth of a training step (torch.profiler). Two elementwise maxima over strided views (columns,
    then rows) give the same values in 0.2 ms. For training, the index of each window's first maximum in reading
    order is the one max_pool2d would pick (the maxima prefer the left column, then the upper row, on ties), so
    its backward kernel gets the same indices and the gradients are the same to the bit, ties included.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        left, right = x[..., 0::2], x[..., 1::2]
        columns = torch.maximum(left, right)  # N x C x H x W/2: each row's maximum of every column pair
        upper, lower = columns[:, :, 0::2], columns[:, :, 1::2]
        pooled = torch.maximum(upper, lower)
        if ctx.needs_input_grad[0]:
            # 0 or 1 as bytes (a view of the comparisons' booleans): half the time of the same sums in int64.
            takes_right = (right > left).view(torch.uint8)  # strictly: on a tie max_pool2d keeps the first (left, upper)
            takes_lower = (lower > upper).view(torch.uint8)
            right_upper, right_lower = takes_right[:, :, 0::2], takes_right[:, :, 1::2]
            column = right_upper + takes_lower * (right_lower - right_upper)  # the chosen row's choice (bytes wrap around)
            width = x.shape[-1]
            corner = torch.arange(0, x.shape[-2], 2).view(-1, 1) * width + torch.arange(0, width, 2)
            ctx.indices = (takes_lower * width + column).to(torch.int64).add_(corner)  # where in the H x W plane
            ctx.save_for_backward(x)
        return pooled

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, ctx.indices)


# Below this many numbers ATen's one kernel beats _MaxPool2x2's ten small ones (a training step at batch 4: 635 us
# with ATen's, 770 us with ours; at batch 16 about even; at 64: 6.3 ms against 4.9 ms).
FAST_POOL_MIN_NUMBERS = 65_536


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2, 2) for N x C x H x W, the same numbers forward and backward; faster on CPU for large inputs."""
    # torch.export (ONNX) traces with a symbolic batch size: a branch on it cannot be exported, so tracing takes the plain op.
    if (torch.compiler.is_compiling() or x.device.type != "cpu" or x.dim() != 4 or x.numel() < FAST_POOL_MIN_NUMBERS
            or x.shape[-1] % 2 or x.shape[-2] % 2 or x.shape[-1] > 254):  # _MaxPool2x2 keeps offsets in bytes
        return F.max_pool2d(x, 2, 2)
    return _MaxPool2x2.apply(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_summary() -> list[dict]:
    """One row per stage as plain data: what it is (in English, marked for the app's catalogs), the shape it outputs
    (H x W x C), its parameters."""
    model = LeNet5()
    rows = [{"layer": "input", "operation": N_("RGB image"), "output_shape": [32, 32, 3], "parameters": 0}]
    x = torch.zeros(1, 3, 32, 32)
    stages = [
        ("conv1", N_("Conv2d 3->6, 5x5 + ReLU"), lambda t: F.relu(model.conv1(t)), model.conv1),
        ("pool1", N_("MaxPool 2x2, stride 2"), model.pool, None),
        ("conv2", N_("Conv2d 6->16, 5x5 + ReLU"), lambda t: F.relu(model.conv2(t)), model.conv2),
        ("pool2", N_("MaxPool 2x2, stride 2"), model.pool, None),
        ("flatten", N_("Flatten 16*5*5"), lambda t: torch.flatten(t, 1), None),
        ("fc1", N_("Linear 400->120 + ReLU"), lambda t: F.relu(model.fc1(t)), model.fc1),
        ("fc2", N_("Linear 120->84 + ReLU"), lambda t: F.relu(model.fc2(t)), model.fc2),
        ("fc3", N_("Linear 84->10 (logits)"), model.fc3, model.fc3),
    ]
    with torch.no_grad():
        for name, operation, fn, module in stages:
            x = fn(x)
            shape = [x.shape[2], x.shape[3], x.shape[1]] if x.dim() == 4 else [x.shape[1]]
            params = count_parameters(module) if module is not None else 0
            rows.append({"layer": name, "operation": operation, "output_shape": shape, "parameters": params})
    return rows
