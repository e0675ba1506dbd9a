"""The shipped pretrained LeNet-5: small, loadable, and at least 77% on the real CIFAR-10 test set (computed here)."""

import json

from lenet.checkpoint import default_checkpoint, load_model
from lenet.data import CLASSES
from lenet.evaluate import evaluate
from lenet.model import count_parameters


def test_the_shipped_model_is_small_and_describes_itself():
    path = default_checkpoint()
    assert path.stat().st_size < 1_000_000
    model, meta = load_model(path)
    assert count_parameters(model) == 62_006 and meta["classes"] == list(CLASSES)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["recipe"]["preset"] == "best" and set(card["per_class_accuracy"]) == set(CLASSES)


def test_the_shipped_model_reaches_77_percent_on_the_real_test_set_with_its_test_time_flips(cifar):
    model, meta = load_model(default_checkpoint())
    assert model.test_flips  # its recipe says so; every prediction of the app averages the image and its mirror
    result = evaluate(model, cifar.test, meta["normalization"])
    assert len(result.labels) == 10_000
    assert result.accuracy >= 0.77, f"{result.accuracy:.2%}"
    model.test_flips = False
    alone = evaluate(model, cifar.test, meta["normalization"]).accuracy
    assert 0.72 <= alone < result.accuracy, f"{alone:.2%} from each image alone"
    # The card's figure was measured the same way; the JPEG copy may differ from the card's source a little.
    card = json.loads(default_checkpoint().with_suffix(".json").read_text())
    assert abs(card["test_accuracy"] - result.accuracy) < 0.02
