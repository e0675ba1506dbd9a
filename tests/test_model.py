import torch

from lenet.model import LeNet5, count_parameters, layer_summary


def test_lenet5_has_the_walkthrough_shape_and_parameter_count():
    model = LeNet5()
    assert count_parameters(model) == 62_006
    assert model(torch.zeros(7, 3, 32, 32)).shape == (7, 10)
    assert [type(m).__name__ for m in model.children()] == ["Conv2d", "MaxPool2d", "Conv2d", "Linear", "Linear", "Linear"]


def test_layer_summary_lists_every_stage_with_its_output_shape():
    rows = layer_summary()
    shapes = [tuple(r["output_shape"]) for r in rows]
    assert shapes == [(32, 32, 3), (28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (400,), (120,), (84,), (10,)]
    assert sum(r["parameters"] for r in rows) == 62_006
    assert [r["parameters"] for r in rows if r["parameters"]] == [456, 2416, 48120, 10164, 850]


def test_stages_give_every_intermediate_result_and_forwards_logits_to_the_bit():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.randn(5, 3, 32, 32)
    stages = model.stages(x)
    assert {name: tuple(t.shape[1:]) for name, t in stages.items()} == {
        "conv1": (6, 28, 28), "pool1": (6, 14, 14), "conv2": (16, 10, 10), "pool2": (16, 5, 5),
        "fc1": (120,), "fc2": (84,), "logits": (10,),
    }
    assert torch.equal(stages["logits"], model(x))
    assert torch.equal(stages["pool2"], model.pool(torch.relu(model.conv2(model.pool(torch.relu(model.conv1(x)))))))


def test_the_state_dict_keeps_the_walkthroughs_names():
    layers = ("conv1", "conv2", "fc1", "fc2", "fc3")
    assert list(LeNet5().state_dict()) == [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]


def test_test_time_flips_average_each_image_and_its_mirror_in_evaluation_only():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.randn(5, 3, 32, 32)
    alone = model(x)
    assert torch.equal(alone, model.logits(x))
    model.test_flips = True
    both = model(x)
    torch.testing.assert_close(both, (model.logits(x) + model.logits(x.flip(3))) / 2)
    assert not torch.allclose(both, alone)
    torch.testing.assert_close(model(x.flip(3)), both)  # an image and its mirror get one answer
    assert torch.equal(model.train()(x), alone)  # training sees each image as it is
    assert sum(p.numel() for p in model.parameters()) == 62_006 and "test_flips" not in str(list(model.state_dict()))


def test_the_parameter_names_are_named_parameters_in_order():
    assert tuple(name for name, _ in LeNet5().named_parameters()) == LeNet5.PARAMETER_NAMES
