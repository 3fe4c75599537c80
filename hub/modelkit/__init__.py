"""Model kit: train small dense networks with NumPy and write real TFLite files, no TensorFlow.

* :mod:`~hub.modelkit.dataset`: seeded synthetic predictive-maintenance data and drift.
* :mod:`~hub.modelkit.train`: :class:`DenseNet`, softmax regression and MLP training.
* :mod:`~hub.modelkit.quantize`: full-integer int8 post-training quantization and a NumPy
  emulation of TFLite's integer kernels.
* :mod:`~hub.modelkit.tflite_writer`: float32 and int8 TFLite flatbuffers.
* :mod:`~hub.modelkit.inference`: run a model in the installed TFLite runtime.
* :mod:`~hub.modelkit.pump`: the demo models and data files.

Needs ``edgefleet[modelkit]`` (``flatbuffers`` and ``tflite``) for writing models and a TFLite
runtime (``edgefleet[agent]``) for running them.
"""

from hub.modelkit.dataset import (
    CLASSES,
    FEATURE_RANGES,
    FEATURES,
    Dataset,
    Drift,
    apply_drift,
    make_dataset,
    reference_stats,
)
from hub.modelkit.errors import InvalidDataError, ModelKitError, QuantizationError
from hub.modelkit.inference import run_tflite
from hub.modelkit.pump import DemoReport, build_demo
from hub.modelkit.quantize import (
    RUNTIME_ROUNDING,
    SOFTMAX_OUTPUT,
    QuantizedLayer,
    QuantizedNet,
    QuantParams,
    Rounding,
    dequantize_output,
    quantize_input,
    quantize_net,
    reference_forward,
    reference_logits,
)
from hub.modelkit.tflite_writer import write_float, write_int8
from hub.modelkit.train import (
    DenseLayer,
    DenseNet,
    Standardizer,
    accuracy,
    fold_standardization,
    forward,
    predict,
    train_mlp,
    train_softmax_regression,
)

__all__ = [
    "CLASSES",
    "FEATURES",
    "FEATURE_RANGES",
    "RUNTIME_ROUNDING",
    "SOFTMAX_OUTPUT",
    "Dataset",
    "DemoReport",
    "DenseLayer",
    "DenseNet",
    "Drift",
    "InvalidDataError",
    "ModelKitError",
    "QuantParams",
    "QuantizationError",
    "QuantizedLayer",
    "QuantizedNet",
    "Rounding",
    "Standardizer",
    "accuracy",
    "apply_drift",
    "build_demo",
    "dequantize_output",
    "fold_standardization",
    "forward",
    "make_dataset",
    "predict",
    "quantize_input",
    "quantize_net",
    "reference_forward",
    "reference_logits",
    "reference_stats",
    "run_tflite",
    "train_mlp",
    "train_softmax_regression",
    "write_float",
    "write_int8",
]
