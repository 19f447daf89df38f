import math
import textwrap

import pytest

from autodetect.api import DetectionExperiment, load_resource
from autodetect.errors import SpecError
from autodetect.tuning.space import Distribution, parse_search_space, validate_for_algorithm


def parse_one(name, value, **others):
    return parse_search_space([{name: value, **others}]).blocks[0][name]


@pytest.mark.parametrize("name, compact, structured", [
    ("learning_rate", "uniform(0.0001, 0.01)", {"type": "uniform", "min_value": 0.0001, "max_value": 0.01}),
    ("learning_rate", "loguniform(-9.2, -4.6)", {"type": "loguniform", "min_value": -9.2, "max_value": -4.6}),
    ("weight_decay", "qloguniform(-9, -5, 0.0001)", {"type": "qloguniform", "min_value": -9, "max_value": -5, "q": 0.0001}),
    ("training_batch_size", "quniform(8, 32, 8)", {"type": "quniform", "min_value": 8, "max_value": 32, "q": 8}),
    ("momentum", "normal(0.9, 0.05)", {"type": "normal", "mu": 0.9, "sigma": 0.05}),
    ("momentum", "lognormal(-0.1, 0.05)", {"type": "lognormal", "mu": -0.1, "sigma": 0.05}),
    ("training_batch_size", "qnormal(16, 4, 2)", {"type": "qnormal", "mu": 16, "sigma": 4, "q": 2}),
    ("layers_to_freeze", "randint(5)", {"type": "randint", "upper": 5}),
    ("layers_to_freeze", "randint(upper=5)", {"type": "randint", "upper": 5}),
    ("training_batch_size", "choice(16, 32)", {"type": "choice", "values": [16, 32]}),
    ("training_batch_size", "choice([16, 32])", {"type": "choice", "values": [16, 32]}),
    ("optimizer", "choice('sgd','adam')", {"type": "choice", "values": ["sgd", "adam"]}),
    ("learning_rate", "Uniform(min_value=0.0001, max_value=0.01)", {"type": "UNIFORM", "min_value": 0.0001, "max_value": 0.01}),
])
def test_compact_and_structured_forms_parse_the_same(name, compact, structured):
    assert parse_one(name, compact) == parse_one(name, structured)


def test_block_canonicalises_names_fills_the_default_model_and_types_values():
    space = parse_search_space([
        {"img_size": 640, "lr_scheduler": "step", "learning_rate": 0.01},
        {"model_name": "choice('fasterrcnn_resnet50_fpn', 'retinanet_resnet50_fpn')", "min_size": "choice(600.0, 800)"},
    ])
    first, second = space.blocks
    assert list(first) == ["model_name", "image_size", "learning_rate_scheduler", "learning_rate"]
    assert first["model_name"] == Distribution("choice", ("yolov5",))
    assert first["image_size"] == Distribution("choice", (640,))
    assert second["min_size"].values == (600, 800) and isinstance(second["min_size"].values[0], int)


@pytest.mark.parametrize("blocks, field, fragment", [
    ([{"learning_rate": {"type": "gauss", "mu": 0.1}}], "[0].learning_rate", "unknown distribution type 'gauss'"),
    ([{"learning_rate": "gauss(0.1, 0.2)"}], "[0].learning_rate", "unknown distribution"),
    ([{"learning_rate": {"min_value": 0.1, "max_value": 0.2}}], "[0].learning_rate", "unknown distribution type None"),
    ([{"learning_rate": {"type": "uniform", "min_value": 0.001}}], "[0].learning_rate", "missing max_value"),
    ([{"learning_rate": {"type": "uniform", "min_value": 0.001, "max_value": 0.01, "q": 0.001}}],
     "[0].learning_rate", "does not take q"),
    ([{"learning_rate": "uniform(0.001, 0.01, 0.1)"}], "[0].learning_rate", "takes 2 arguments"),
    ([{"learning_rate": "uniform(0.001, min_value=0.01)"}], "[0].learning_rate", "given twice"),
    ([{"learning_rate": "uniform(0.01, 0.001)"}], "[0].learning_rate", "must be below max_value"),
    ([{"learning_rate": "uniform(0.01, 0.01)"}], "[0].learning_rate", "must be below max_value"),
    ([{"learning_rate": "uniform(0.1, 2)"}], "[0].learning_rate", "above the maximum"),
    ([{"learning_rate": {"type": "uniform", "min_value": 0.001, "max_value": math.inf}}], "[0].learning_rate", "finite"),
    ([{"learning_rate": {"type": "uniform", "min_value": "0.001", "max_value": 0.1}}], "[0].learning_rate", "number"),
    ([{"momentum": "normal(0.9, 0)"}], "[0].momentum", "sigma must be greater than 0"),
    ([{"momentum": "lognormal(-0.1, -1)"}], "[0].momentum", "sigma must be greater than 0"),
    ([{"momentum": "normal(1.5, 0.1)"}], "[0].momentum", "centre"),
    ([{"box_score_threshold": "quniform(0.1, 0.5, 0)"}], "[0].box_score_threshold", "q must be greater than 0"),
    ([{"box_score_threshold": "quniform(0.1, 0.5, -0.1)"}], "[0].box_score_threshold", "q must be greater than 0"),
    # Azure's loguniform bounds are natural logs: 0.0001..0.01 means exp(0.0001)..exp(0.01), above 1
    ([{"learning_rate": "loguniform(0.0001, 0.01)"}], "[0].learning_rate", "natural logs"),
    ([{"learning_rate": "loguniform(-9, 800)"}], "[0].learning_rate", "overflows"),
    ([{"layers_to_freeze": "randint(0)"}], "[0].layers_to_freeze", "at least 1"),
    ([{"layers_to_freeze": "randint(2.5)"}], "[0].layers_to_freeze", "integer"),
    ([{"training_batch_size": "randint(8)"}], "[0].training_batch_size", "0 is below the minimum 1"),
    ([{"training_batch_size": "quniform(1, 10, 4)"}], "[0].training_batch_size", "0 is below the minimum 1"),
    ([{"training_batch_size": "uniform(1, 10)"}], "[0].training_batch_size", "is an integer"),
    ([{"training_batch_size": "quniform(2, 10, 0.5)"}], "[0].training_batch_size", "integer q"),
    ([{"optimizer": "choice('sgd', 'foo')"}], "[0].optimizer", "'foo' is not one of sgd, adam, adamw"),
    ([{"optimizer": {"type": "choice", "values": []}}], "[0].optimizer", "non-empty"),
    ([{"optimizer": {"type": "choice", "values": "sgd"}}], "[0].optimizer", "non-empty list"),
    ([{"optimizer": "choice('sgd', 'sgd')"}], "[0].optimizer", "twice"),
    ([{"optimizer": "uniform(0, 1)"}], "[0].optimizer", "takes choice or a fixed value"),
    ([{"nesterov": "choice(1, 0)"}], "[0].nesterov", "true or false"),
    ([{"optimizer": ["sgd", "adam"]}], "[0].optimizer", "expected a distribution"),
    ([{"learning_rate": "uniform(__import__('os').getpid(), 1)"}], "[0].learning_rate", "only literal"),
    ([{"learning_rate": "uniform(*[0.1, 0.2])"}], "[0].learning_rate", "only literal"),
    ([{"learning_rate": "uniform(0.1,"}], "[0].learning_rate", "expected a number"),  # not a call: a fixed string
    ([{"lr": "uniform(0.001, 0.01)"}], "[0].lr", "unknown hyperparameter"),
    ([{"img_size": 640, "image_size": "choice(320)"}], "[0].image_size", "given twice"),
    ([{"model_name": "choice('yolov8', 'yolov99')"}], "[0].model_name", "'yolov99' is not one of"),
    ([{"model_name": "uniform(0, 1)"}], "[0].model_name", "takes choice"),
    ([{"model_name": "yolov8", "min_size": 600}], "[0].min_size", "does not take 'min_size'"),
    ([{"min_size": 600}], "[0].min_size", "model 'yolov5' does not take"),  # no model_name: the default model
    ([{"model_name": "choice('fasterrcnn_resnet50_fpn', 'ssdlite320_mobilenet_v3_large')", "max_size": 1000}],
     "[0].max_size", "'ssdlite320_mobilenet_v3_large' does not take"),
    ([{"model_name": "yolov8"}, {"model_name": "fasterrcnn_resnet50_fpn", "img_size": "choice(320, 640)"}],
     "[1].img_size", "does not take 'img_size'"),
    (["yolov8"], "[0]", "must map"),
])
def test_refusals_name_their_field(blocks, field, fragment):
    with pytest.raises(SpecError) as err:
        parse_search_space(blocks)
    assert err.value.field == field
    assert fragment in err.value.reason


def test_an_empty_space_is_refused():
    with pytest.raises(SpecError, match="non-empty"):
        parse_search_space([])


def test_grid_enumerates_the_product_in_a_fixed_order_without_repeats():
    space = parse_search_space([
        {"model_name": "yolov8", "optimizer": "choice('sgd', 'adam')", "training_batch_size": "choice(8, 16, 32)"},
        {"model_name": "yolov8", "optimizer": "sgd", "training_batch_size": 8},  # already in the first block
        {"model_name": "fasterrcnn_resnet50_fpn", "min_size": "choice(600, 800)"},
    ])
    assert space.is_discrete and space.grid_size() == 6 + 1 + 2
    grid = list(space.grid())
    assert grid[:3] == [{"model_name": "yolov8", "optimizer": "sgd", "training_batch_size": b} for b in (8, 16, 32)]
    assert grid[-2:] == [{"model_name": "fasterrcnn_resnet50_fpn", "min_size": s} for s in (600, 800)]
    assert len(grid) == 8


def test_a_continuous_space_has_no_grid_and_grid_sampling_refuses_it():
    space = parse_search_space([{"optimizer": "choice('sgd')"}, {"optimizer": "adam", "layers_to_freeze": "randint(3)"}])
    assert not space.is_discrete
    with pytest.raises(ValueError):
        next(space.grid())
    validate_for_algorithm(space, "random")
    validate_for_algorithm(space, "bayesian")
    with pytest.raises(SpecError) as err:
        validate_for_algorithm(space, "grid")
    assert err.value.field == "[1].layers_to_freeze" and "randint" in err.value.reason
    with pytest.raises(ValueError, match="unknown sampling algorithm"):
        validate_for_algorithm(space, "hyperband")


def test_block_of_finds_the_block_that_gave_the_parameters():
    space = parse_search_space([
        {"model_name": "yolov8", "learning_rate": "loguniform(-9.2, -4.6)", "training_batch_size": "quniform(8, 32, 8)"},
        {"model_name": "fasterrcnn_resnet50_fpn", "learning_rate": "uniform(0.0001, 0.001)"},
    ])
    assert space.block_of({"model_name": "yolov8", "learning_rate": 0.005, "training_batch_size": 16.0}) == 0
    assert space.block_of({"model_name": "yolov8", "learning_rate": 0.005, "training_batch_size": 12}) is None
    assert space.block_of({"model_name": "yolov8", "learning_rate": 0.5, "training_batch_size": 16}) is None
    assert space.block_of({"model_name": "fasterrcnn_resnet50_fpn", "learning_rate": 0.0005}) == 1
    assert space.block_of({"model_name": "fasterrcnn_resnet50_fpn", "learning_rate": 0.0005, "momentum": 0.9}) is None


EXPERIMENT = """\
apiVersion: autodetect.dev/v1alpha1
kind: DetectionExperiment
metadata: {name: sweep}
spec:
  dataset:
    training: {uri: file://train.jsonl}
  searchSpace:
    - model_name: {type: choice, values: [yolov8]}
      %s
  sampling: {algorithm: %s}
"""


@pytest.mark.parametrize("line, algorithm, field", [
    ("learning_rate: {type: uniform, min_value: 0.01, max_value: 0.001}", "random", "learning_rate"),
    ("img_size: choice(320, 'big')", "random", "img_size"),
    ("lr_scheduler: {type: uniform, min_value: 0, max_value: 1}", "bayesian", "lr_scheduler"),
    ("learning_rate: uniform(0.001, 0.01)", "grid", "learning_rate"),
])
def test_loading_an_experiment_names_the_search_space_field(tmp_path, line, algorithm, field):
    path = tmp_path / "experiment.yaml"
    path.write_text(EXPERIMENT % (line, algorithm))
    with pytest.raises(SpecError) as err:
        load_resource(path, DetectionExperiment)
    assert err.value.field == f"{path}: spec.searchSpace[0].{field}"


def test_a_good_experiment_loads_with_its_search_space(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(textwrap.dedent(EXPERIMENT % ("optimizer: choice('sgd', 'adam')", "grid")))
    exp = load_resource(path, DetectionExperiment)
    assert len(list(parse_search_space(exp.spec.searchSpace).grid())) == 2
