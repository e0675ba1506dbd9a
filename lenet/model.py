"""LeNet-5 exactly as in the PyTorch CIFAR-10 walkthrough, and its layer summary."""

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    """conv(3->6, 5x5) -> pool -> conv(6->16, 5x5) -> pool -> fc 120 -> fc 84 -> fc 10 (logits)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """forward, one stage at a time: every intermediate result by name, the logits last.

        The same operations in the same order as forward, so the logits are forward's to the bit (tests check it).
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_summary() -> list[dict]:
    """One row per stage as plain data: what it is, the shape it outputs (H x W x C), its parameters."""
    model = LeNet5()
    rows = [{"layer": "input", "operation": "RGB image", "output_shape": [32, 32, 3], "parameters": 0}]
    x = torch.zeros(1, 3, 32, 32)
    stages = [
        ("conv1", "Conv2d 3->6, 5x5 + ReLU", lambda t: F.relu(model.conv1(t)), model.conv1),
        ("pool1", "MaxPool 2x2, stride 2", model.pool, None),
        ("conv2", "Conv2d 6->16, 5x5 + ReLU", lambda t: F.relu(model.conv2(t)), model.conv2),
        ("pool2", "MaxPool 2x2, stride 2", model.pool, None),
        ("flatten", "Flatten 16*5*5", lambda t: torch.flatten(t, 1), None),
        ("fc1", "Linear 400->120 + ReLU", lambda t: F.relu(model.fc1(t)), model.fc1),
        ("fc2", "Linear 120->84 + ReLU", lambda t: F.relu(model.fc2(t)), model.fc2),
        ("fc3", "Linear 84->10 (logits)", model.fc3, model.fc3),
    ]
    with torch.no_grad():
        for name, operation, fn, module in stages:
            x = fn(x)
            shape = [x.shape[2], x.shape[3], x.shape[1]] if x.dim() == 4 else [x.shape[1]]
            params = count_parameters(module) if module is not None else 0
            rows.append({"layer": name, "operation": operation, "output_shape": shape, "parameters": params})
    return rows
