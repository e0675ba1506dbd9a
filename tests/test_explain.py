"""lenet.explain on the shipped model and real CIFAR-10 test images, and on small models whose answers are known."""

import pytest
import torch
import torch.nn.functional as F

from lenet import explain
from lenet.checkpoint import default_checkpoint, load_model, save_checkpoint
from lenet.data import CLASSES, WALKTHROUGH_NORMALIZATION
from lenet.inference import NORMALIZATIONS, normalize, predict_logits
from lenet.model import LeNet5
from lenet.runs import epoch_checkpoints
from lenet.train import preset, train

SHAPES = [(3, 32, 32), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,), (10,), (10,), (10,)]


@pytest.fixture(scope="module")
def shipped():
    return load_model(default_checkpoint())


def test_activations_have_every_layers_shape_and_give_the_models_own_logits_exactly(shipped, cifar):
    model, meta = shipped
    norm = meta["normalization"]
    for index in range(0, 10_000, 997):
        image = cifar.test.images[index]
        stages = explain.activations(model, image, norm)
        assert list(stages) == ["input", "conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "logits", "probabilities", "answer"]
        assert [tuple(t.shape) for t in stages.values()] == SHAPES
        x = normalize(image.unsqueeze(0), norm)
        with torch.no_grad():
            own_logits, answer = model.logits(x)[0], model(x)[0]
        assert torch.equal(stages["logits"], own_logits)
        assert torch.equal(stages["input"], x[0])
        assert torch.allclose(stages["probabilities"], own_logits.softmax(0))
        # What the model answers with: the image alone, or with its mirror image for a model tested that way.
        assert torch.allclose(stages["answer"], answer.softmax(0))
        if model.test_flips:
            with torch.no_grad():
                mirrored = model.logits(x.flip(3))[0]
            torch.testing.assert_close(stages["answer"], ((own_logits + mirrored) / 2).softmax(0))
        # After ReLU nothing is negative, and each pooled value is the largest of its 2x2 block.
        assert all(stages[name].min() >= 0 for name in ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2"))
        assert torch.equal(stages["pool1"], F.max_pool2d(stages["conv1"], 2))


def test_filters_are_copies_of_both_convolutions(shipped):
    model, _ = shipped
    found = explain.filters(model)
    assert found.conv1_weight.shape == (6, 3, 5, 5) and found.conv1_bias.shape == (6,)
    assert found.conv2_weight.shape == (16, 6, 5, 5) and found.conv2_bias.shape == (16,)
    assert torch.equal(found.conv1_weight, model.conv1.weight) and torch.equal(found.conv2_bias, model.conv2.bias)
    found.conv1_weight.zero_()
    assert model.conv1.weight.abs().sum() > 0


def _positions(feature_map: torch.Tensor, channel: int) -> list[tuple[int, int]]:
    """Corners, the strongest response and a switched-off one (ReLU at work) of one map."""
    plane = feature_map[channel]
    last = plane.shape[-1] - 1
    strongest = divmod(int(plane.argmax()), plane.shape[-1])
    off = (plane == 0).nonzero()
    return [(0, 0), (last, last), (0, last), strongest] + ([tuple(off[len(off) // 2].tolist())] if len(off) else [])


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_the_worked_example_adds_up_to_the_networks_own_value(shipped, cifar, layer):
    model, meta = shipped
    norm = meta["normalization"]
    positives = negatives = 0
    for index in (3, 1234, 8765):
        image = cifar.test.images[index]
        stages = explain.activations(model, image, norm)
        source = stages["input" if layer == "conv1" else "pool1"]
        for channel in (0, 5):
            for row, col in _positions(stages[layer], channel):
                example = explain.worked_example(model, image, norm, layer, channel, row, col)
                assert torch.equal(example.patch, source[:, row : row + 5, col : col + 5])
                assert torch.equal(example.weights, getattr(model, layer).weight[channel])
                assert torch.equal(example.products, example.patch * example.weights)
                assert example.total == pytest.approx(example.products.double().sum().item())
                assert example.pre_relu == pytest.approx(example.total + example.bias)
                assert example.post_relu == max(example.pre_relu, 0.0)
                assert example.post_relu == pytest.approx(stages[layer][channel, row, col].item(), abs=1e-5)
                assert example.map_value == stages[layer][channel, row, col].item()
                positives += example.pre_relu > 0
                negatives += example.pre_relu < 0
    assert positives and negatives  # both sides of the ReLU were checked


def test_the_worked_example_refuses_positions_outside_the_map(shipped, cifar):
    model, meta = shipped
    image = cifar.test.images[0]
    explain.worked_example(model, image, meta["normalization"], "conv2", 15, 9, 9)
    for layer, channel, row, col in [("conv1", 0, 28, 0), ("conv1", 6, 0, 0), ("conv2", 0, 0, 10), ("fc1", 0, 0, 0)]:
        with pytest.raises(ValueError):
            explain.worked_example(model, image, meta["normalization"], layer, channel, row, col)


# A LeNet-5 with weights set by hand so that only one region of the image counts: class 0's logit is 4 x the mean
# of a 5 x 5 input patch, through a single path of the network. conv1's filter 0 averages its 3 x 5 x 5 inputs,
# conv2's filter 0 passes the centre of pool1's map 0, fc1's unit 0 reads pool2's map 0 at row 0, column 4. Which
# input pixels can reach pool2 (0, 4): conv2 (0..1, 8..9) <- pool1 (2..3, 10..11) <- conv1 (4..7, 20..23) <-
# input rows 4..11, columns 20..27, in the top right (off the diagonal, so a transposed map would show).
REGION_ROWS, REGION_COLS = range(4, 12), range(20, 28)
GAIN = 4.0


def one_region_model() -> LeNet5:
    model = LeNet5()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.conv1.weight[0] = 1 / 75
        model.conv2.weight[0, 0, 2, 2] = 1
        model.fc1.weight[0, 0 * 25 + 0 * 5 + 4] = 1
        model.fc2.weight[0, 0] = 1
        model.fc3.weight[0, 0] = GAIN
    return model.eval()


def noise_with_a_white_region(seed: int = 0) -> torch.Tensor:
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    image[:, REGION_ROWS.start : REGION_ROWS.stop, REGION_COLS.start : REGION_COLS.stop] = 255
    return image


def _inside_region(row: int, col: int) -> bool:
    return row in REGION_ROWS and col in REGION_COLS


def test_occlusion_finds_the_only_region_that_matters_for_the_class_and_against_it():
    model, image = one_region_model(), noise_with_a_white_region()
    assert explain.top_class(model, image, WALKTHROUGH_NORMALIZATION) == 0
    drop = explain.occlusion_map(model, image, WALKTHROUGH_NORMALIZATION)  # the top class: 0
    assert drop.shape == (32, 32)
    assert _inside_region(*divmod(int(drop.argmax()), 32))
    # Grey over the whole region takes class 0 from e^4 / (e^4 + 9) down to 1/10; max pooling keeps whatever white
    # a window leaves, so a pixel's mean drop over its windows is smaller, but clearly there.
    assert drop.max() > 0.2
    # No 8 x 8 window that covers these pixels reaches the region: hiding them changes nothing at all.
    assert drop[20:].abs().max() == 0 and drop[:, :13].abs().max() == 0
    # "Why not automobile?": hiding the region makes class 1 likelier, so its map is most negative there.
    against = explain.occlusion_map(model, image, WALKTHROUGH_NORMALIZATION, target=1)
    assert _inside_region(*divmod(int(against.argmin()), 32)) and against.min() < -0.01 and against.max() <= 1e-7


def test_saliency_is_the_gradient_of_the_class_logit_and_only_where_the_class_looks():
    model, image = one_region_model(), noise_with_a_white_region()
    gradient = explain.saliency_map(model, image, WALKTHROUGH_NORMALIZATION, target=0)
    assert gradient.shape == (32, 32)
    rows, cols = gradient.nonzero().unbind(1)
    assert len(rows) and all(_inside_region(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True))
    # d logit_0 / d pixel = GAIN / 75 through the averaging filter: the logit's gradient, not the probability's.
    assert gradient.max().item() == pytest.approx(GAIN / 75)
    # Class 1's logit is constant 0, so nothing in the image moves it.
    assert explain.saliency_map(model, image, WALKTHROUGH_NORMALIZATION, target=1).abs().max() == 0


def test_attribution_on_real_images_gives_maps_for_any_class(shipped, cifar):
    model, meta = shipped
    norm = meta["normalization"]
    image = cifar.test.images[42]
    top = explain.top_class(model, image, norm)
    other = (top + 1) % len(CLASSES)
    for target in (None, top, other):
        gradient = explain.saliency_map(model, image, norm, target=target)
        drop = explain.occlusion_map(model, image, norm, target=target)
        assert gradient.shape == drop.shape == (32, 32)
        assert torch.isfinite(gradient).all() and gradient.min() >= 0 and (gradient > 0).float().mean() > 0.5
        assert torch.isfinite(drop).all() and drop.abs().max() > 1e-4
    assert torch.equal(explain.saliency_map(model, image, norm), explain.saliency_map(model, image, norm, target=top))
    for attribution in (explain.saliency_map, explain.occlusion_map):
        with pytest.raises(ValueError):
            attribution(model, image, norm, target=len(CLASSES))
    assert not torch.equal(explain.saliency_map(model, image, norm, target=other), explain.saliency_map(model, image, norm, target=top))


@pytest.mark.parametrize("weights_require_grad", [True, False])
def test_explaining_leaves_the_shared_model_exactly_as_it_was(cifar, weights_require_grad):
    model, meta = load_model(default_checkpoint())
    model.requires_grad_(weights_require_grad)
    norm = meta["normalization"]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    image = cifar.test.images[7]
    explain.activations(model, image, norm)
    explain.worked_example(model, image, norm, "conv2", 3, 4, 5)
    with torch.inference_mode():  # a caller inside inference mode still gets its gradients
        explain.saliency_map(model, image, norm, target=3)
    explain.occlusion_map(model, image, norm, target=3)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(p.requires_grad is weights_require_grad and p.grad is None for p in model.parameters())
    assert not model.training
    assert not model._forward_hooks and not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_the_panel_is_one_test_image_per_class_and_the_same_each_time(cifar):
    chosen = explain.panel(cifar.test)
    assert len(chosen) == len(set(chosen)) == 10
    assert cifar.test.labels[chosen].tolist() == list(range(10))
    assert explain.panel(cifar.test, seed=0) == chosen
    assert explain.panel(cifar.test, seed=1) != chosen


def test_per_epoch_checkpoints_load_and_show_the_panel_changing(tmp_path, cifar, one_thread):
    # Batches of 32 rather than 128: 63 steps an epoch, enough for the second epoch to change its answers.
    config = preset("quick", epochs=2, train_subset=2000, batch_size=32)
    meta = {"normalization": NORMALIZATIONS[config.normalization], "recipe": config.to_dict()}

    def save_epoch(model_state, training_state, metrics):
        epoch = round(metrics["epoch"])
        save_checkpoint(tmp_path / "epochs" / f"epoch-{epoch:03d}.pt", model_state, {**meta, "metrics": metrics}, training_state)

    result = train(config, cifar, on_checkpoint=save_epoch)
    (tmp_path / "epochs" / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "epochs" / "epoch-best.pt").write_text("not one epoch's checkpoint")
    epochs = epoch_checkpoints(tmp_path)
    assert {epoch: path.name for epoch, path in epochs.items()} == {1: "epoch-001.pt", 2: "epoch-002.pt"}
    paths = list(epochs.values())
    images = cifar.test.images[explain.panel(cifar.test)]
    probabilities = explain.classify_over_epochs(paths, images)
    assert probabilities.shape == (2, 10, 10)
    assert torch.allclose(probabilities.sum(2), torch.ones(2, 10))
    # A second epoch changes what it thinks, and what it answers for some of the ten.
    assert (probabilities[0] - probabilities[1]).abs().max() > 0.05
    assert (probabilities[0].argmax(1) != probabilities[1].argmax(1)).any()
    # The last epoch's file is the trained model itself.
    assert torch.allclose(probabilities[1], predict_logits(result.model, images, meta["normalization"]).softmax(1), atol=1e-6)
    assert explain.classify_over_epochs([], images).shape == (0, 10, 10)
    assert epoch_checkpoints(tmp_path / "elsewhere") == {}


def test_epoch_checkpoints_come_in_epoch_order_past_999(tmp_path):
    (tmp_path / "epochs").mkdir()
    for name in ("epoch-1000.pt", "epoch-010.pt", "epoch-999.pt", "epoch-002.pt", "epoch-.pt", "epoch-3.tmp"):
        (tmp_path / "epochs" / name).write_bytes(b"")
    epochs = epoch_checkpoints(tmp_path)
    assert list(epochs) == [2, 10, 999, 1000]
    assert [path.name for path in epochs.values()] == ["epoch-002.pt", "epoch-010.pt", "epoch-999.pt", "epoch-1000.pt"]
