"""onnxshap: exact DeepSHAP attributions for any ONNX model, compiled with JAX."""

from onnxshap._compile_cache import enable_compilation_cache as enable_compilation_cache
from onnxshap._errors import (
    ConversionError as ConversionError,
    ExternalDataError as ExternalDataError,
    GraphError as GraphError,
    InputError as InputError,
    MissingDependencyError as MissingDependencyError,
    ModelLoadError as ModelLoadError,
    OnnxShapError as OnnxShapError,
    OpsetError as OpsetError,
    OutputError as OutputError,
    RuleTableError as RuleTableError,
    UnsupportedOpError as UnsupportedOpError,
)
from onnxshap._explainer import AdditivityError as AdditivityError, Explainer as Explainer, Explanation as Explanation
from onnxshap._model import Model as Model, load as load, unsupported_ops as unsupported_ops

__version__ = "0.1.0"
