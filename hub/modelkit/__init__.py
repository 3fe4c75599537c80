"""Model kit: train small networks with NumPy and write real TFLite files, no TensorFlow.

* :mod:`~hub.modelkit.dataset`: seeded synthetic predictive-maintenance data and drift, and
  the same readings labelled with remaining useful life.
* :mod:`~hub.modelkit.vibration`: seeded synthetic 3-axis accelerometer windows (normal,
  imbalance, bearing fault) with per-axis gain and noise knobs.
* :mod:`~hub.modelkit.train`: :class:`DenseNet`, softmax regression, MLP classifiers and
  regressors.
* :mod:`~hub.modelkit.cnn`: a 1-D CNN (convolution, global max pooling, dense), its int8
  quantization and NumPy integer reference.
* :mod:`~hub.modelkit.quantize`: full-integer int8 post-training quantization and a NumPy
  emulation of TFLite's integer kernels.
* :mod:`~hub.modelkit.tflite_writer`: float32 and int8 TFLite flatbuffers.
* :mod:`~hub.modelkit.inference`: run a model in the installed TFLite runtime.
* :mod:`~hub.modelkit.pump`: the demo models and data files.
* :mod:`~hub.modelkit.fleet_models`: ``vibration-cnn`` and ``pump-rul``, ready to bundle.

Needs ``edgefleet[modelkit]`` (``flatbuffers`` and ``tflite``) for writing models and a TFLite
runtime (``edgefleet[agent]``) for running them.
"""

from hub.modelkit.cnn import (
    ConvNet,
    QuantizedConvNet,
    cnn_accuracy,
    cnn_forward,
    quantize_cnn,
    quantize_windows,
    reference_cnn_forward,
    reference_cnn_logits,
    train_cnn,
)
from hub.modelkit.dataset import (
    CLASSES,
    FEATURE_RANGES,
    FEATURES,
    Dataset,
    Drift,
    RulDataset,
    apply_drift,
    make_dataset,
    make_rul_dataset,
    reference_stats,
)
from hub.modelkit.errors import InvalidDataError, ModelKitError, QuantizationError
from hub.modelkit.fleet_models import FleetModelReport, build_pump_rul, build_vibration_cnn
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
from hub.modelkit.tflite_writer import write_cnn_int8, write_float, write_int8
from hub.modelkit.train import (
    DenseLayer,
    DenseNet,
    Standardizer,
    accuracy,
    fold_standardization,
    forward,
    predict,
    train_mlp,
    train_regression_mlp,
    train_softmax_regression,
)
from hub.modelkit.vibration import AXES, VIBRATION_CLASSES, VibrationSet, make_vibration

__all__ = [
    "AXES",
    "CLASSES",
    "FEATURES",
    "FEATURE_RANGES",
    "RUNTIME_ROUNDING",
    "SOFTMAX_OUTPUT",
    "VIBRATION_CLASSES",
    "ConvNet",
    "Dataset",
    "DemoReport",
    "DenseLayer",
    "DenseNet",
    "Drift",
    "FleetModelReport",
    "InvalidDataError",
    "ModelKitError",
    "QuantParams",
    "QuantizationError",
    "QuantizedConvNet",
    "QuantizedLayer",
    "QuantizedNet",
    "Rounding",
    "RulDataset",
    "Standardizer",
    "VibrationSet",
    "accuracy",
    "apply_drift",
    "build_demo",
    "build_pump_rul",
    "build_vibration_cnn",
    "cnn_accuracy",
    "cnn_forward",
    "dequantize_output",
    "fold_standardization",
    "forward",
    "make_dataset",
    "make_rul_dataset",
    "make_vibration",
    "predict",
    "quantize_cnn",
    "quantize_input",
    "quantize_net",
    "quantize_windows",
    "reference_cnn_forward",
    "reference_cnn_logits",
    "reference_forward",
    "reference_logits",
    "reference_stats",
    "run_tflite",
    "train_cnn",
    "train_mlp",
    "train_regression_mlp",
    "train_softmax_regression",
    "write_cnn_int8",
    "write_float",
    "write_int8",
]
