"""onnxshap: exact DeepSHAP attributions for any ONNX model, compiled with JAX."""

import importlib as _importlib
import typing as _typing

from onnxshap._errors import (
    AdditivityError as AdditivityError,
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

if _typing.TYPE_CHECKING:
    from onnxshap._compile_cache import enable_compilation_cache as enable_compilation_cache
    from onnxshap._convert import convert as convert
    from onnxshap._dataset import DatasetResult as DatasetResult, explain_dataset as explain_dataset
    from onnxshap._explainer import Explainer as Explainer
    from onnxshap._explanation import Explanation as Explanation
    from onnxshap._inputs import read_inputs as read_inputs
    from onnxshap._model import Model as Model, load as load, unsupported_ops as unsupported_ops

__version__ = "0.1.0"

# These pull in JAX and onnx (about a second), so they are imported on first use: `import onnxshap.cli`
# stays light and the command line handles Ctrl-C from its first instant (onnxshap/_interrupt.py).
_LAZY = {
    "enable_compilation_cache": "onnxshap._compile_cache",
    "convert": "onnxshap._convert",
    "DatasetResult": "onnxshap._dataset",
    "explain_dataset": "onnxshap._dataset",
    "Explainer": "onnxshap._explainer",
    "Explanation": "onnxshap._explanation",
    "Model": "onnxshap._model",
    "load": "onnxshap._model",
    "unsupported_ops": "onnxshap._model",
    "read_inputs": "onnxshap._inputs",
}

__all__ = [
    "AdditivityError",
    "ConversionError",
    "DatasetResult",
    "Explainer",
    "Explanation",
    "ExternalDataError",
    "GraphError",
    "InputError",
    "MissingDependencyError",
    "Model",
    "ModelLoadError",
    "OnnxShapError",
    "OpsetError",
    "OutputError",
    "RuleTableError",
    "UnsupportedOpError",
    "convert",
    "enable_compilation_cache",
    "explain_dataset",
    "load",
    "read_inputs",
    "unsupported_ops",
]


if not _typing.TYPE_CHECKING:  # type checkers read the imports above (a __getattr__ would hide typos from them)

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:  # also how `from onnxshap import _submodule` falls through to importing it
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(module), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
