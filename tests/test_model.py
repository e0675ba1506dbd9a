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
