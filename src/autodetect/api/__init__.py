from autodetect.api.loader import load_resource, parse_resource
from autodetect.api.v1alpha1 import (
    API_VERSION, DetectionDeployment, DetectionExperiment, DetectionModel, DetectionTrial,
)

__all__ = ["API_VERSION", "DetectionDeployment", "DetectionExperiment", "DetectionModel", "DetectionTrial",
           "load_resource", "parse_resource"]
