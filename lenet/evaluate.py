"""The walkthrough's last chapter: overall and per-class test accuracy, plus a confusion matrix and every prediction."""

from dataclasses import dataclass

import torch

from .data import CLASSES, Split
from .inference import predict_logits


@dataclass
class Evaluation:
    accuracy: float
    per_class: dict[str, float]  # class name -> accuracy on that class
    confusion: list[list[int]]  # confusion[true][predicted], counts
    predicted: torch.Tensor  # N, int64: each test image's predicted class
    confidence: torch.Tensor  # N, float: the probability the model gave its prediction
    labels: torch.Tensor  # N, int64: the true classes

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "per_class": self.per_class, "confusion": self.confusion, "images": len(self.labels)}

    def select(self, true: int | None = None, predicted: int | None = None, mistakes_only: bool = True) -> torch.Tensor:
        """Indices of test images of a true and a predicted class (None: any), optionally mistakes only, most confident first."""
        mask = self.predicted != self.labels if mistakes_only else torch.ones_like(self.labels, dtype=torch.bool)
        if true is not None:
            mask &= self.labels == true
        if predicted is not None:
            mask &= self.predicted == predicted
        indices = mask.nonzero().flatten()
        return indices[self.confidence[indices].argsort(descending=True)]

def evaluate(model: torch.nn.Module, split: Split, normalization: dict) -> Evaluation:
    probabilities = predict_logits(model, split.images, normalization).softmax(1).cpu()
    confidence, predicted = probabilities.max(1)
    labels = split.labels.cpu()
    k = len(CLASSES)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    totals = confusion.sum(1).clamp(min=1)
    per_class = {name: (confusion[i, i] / totals[i]).item() for i, name in enumerate(CLASSES)}
    return Evaluation(
        accuracy=(predicted == labels).float().mean().item() if len(labels) else 0.0,
        per_class=per_class,
        confusion=confusion.tolist(),
        predicted=predicted,
        confidence=confidence,
        labels=labels,
    )
