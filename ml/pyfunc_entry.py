"""Models-from-code entry point: MLflow copies this file into the model artifact
and runs it at load time, so no pickled Python object is stored."""

from mlflow.models import set_model

from ml.pyfunc_model import ProductClassifierModel

set_model(ProductClassifierModel())
