import pytest

from autodetect.errors import SpecError
from autodetect.models.hyperparameters import resolve


def test_yolo_defaults_are_azures():
    hp = resolve({"model_name": "yolov5"})
    assert (hp["learning_rate"], hp["number_of_epochs"], hp["training_batch_size"]) == (0.01, 30, 16)
    assert (hp["model_size"], hp["image_size"]) == ("medium", 640)
    assert "min_size" not in hp


def test_faster_rcnn_defaults_are_azures():
    hp = resolve({"model_name": "fasterrcnn_resnet50_fpn"})
    assert (hp["learning_rate"], hp["number_of_epochs"], hp["min_size"], hp["max_size"]) == (0.005, 15, 600, 1333)
    assert "image_size" not in hp


def test_both_spellings_are_accepted_and_canonicalised():
    old = resolve({"model_name": "yolov8", "img_size": 320, "lr_scheduler": "step", "box_detections_per_img": 50, "amsgrad": True})
    new = resolve({"model_name": "yolov8", "image_size": 320, "learning_rate_scheduler": "step",
                   "box_detections_per_image": 50, "ams_gradient": True})
    assert old == new


@pytest.mark.parametrize("given, field", [
    ({"model_name": "yolov8", "learnin_rate": 0.1}, "hyperparameters.learnin_rate"),
    ({"model_name": "yolov8", "min_size": 600}, "hyperparameters.min_size"),
    ({"model_name": "fasterrcnn_resnet50_fpn", "model_size": "small"}, "hyperparameters.model_size"),
    ({"model_name": "ssdlite320_mobilenet_v3_large", "max_size": 600}, "hyperparameters.max_size"),
    ({"model_name": "yolov8", "optimizer": "rmsprop"}, "hyperparameters.optimizer"),
    ({"model_name": "yolov8", "learning_rate": 2.0}, "hyperparameters.learning_rate"),
    ({"model_name": "yolov8", "learning_rate": 0}, "hyperparameters.learning_rate"),
    ({"model_name": "yolov8", "number_of_epochs": 2.5}, "hyperparameters.number_of_epochs"),
    ({"model_name": "yolov8", "img_size": 320, "image_size": 320}, "hyperparameters.image_size"),
    ({"model_name": "fasterrcnn_resnet50_fpn", "img_size": 320}, "hyperparameters.img_size"),
    ({"model_name": "detr"}, "hyperparameters.model_name"),
])
def test_bad_hyperparameters_are_refused_by_name(given, field):
    with pytest.raises(SpecError) as info:
        resolve(given)
    assert info.value.field == field
