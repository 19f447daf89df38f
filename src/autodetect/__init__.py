"""autodetect: AutoML for object detection, native to Kubernetes."""

__version__ = "0.1.0"
