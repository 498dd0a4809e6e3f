"""Exception types. Every message says what went wrong, why, and what to do about it."""

from __future__ import annotations


class OnnxShapError(Exception):
    """Base class of every error onnxshap raises on purpose."""


class ModelLoadError(OnnxShapError):
    """The model could not be read: missing file, not ONNX, truncated, or corrupt."""


class ExternalDataError(ModelLoadError):
    """A tensor stored outside the .onnx file is missing or points outside the model's folder."""


class OpsetError(ModelLoadError):
    """The model declares an opset this installation of the onnx package does not know."""


class UnsupportedOpError(OnnxShapError):
    """The graph contains an op (or op version) that has no row in the rule table."""


class RuleTableError(OnnxShapError):
    """A row of the rule table in rules/ is invalid (a bug in onnxshap, not in the user's model)."""


class GraphError(OnnxShapError):
    """The graph is structurally unusable: a cycle, a missing tensor, a value that must be static but is not."""


class AdditivityError(OnnxShapError):
    """Attributions do not sum to f(x) - mean f(background) within tolerance."""


class InputError(OnnxShapError, ValueError):
    """An input given by the user does not fit the model: unknown name, wrong rank, shape or dtype."""


class OutputError(OnnxShapError, OSError):
    """A result file could not be written (a directory, a missing folder, a full disk); nothing was left behind."""


class ConversionError(OnnxShapError):
    """A framework model (PyTorch, Keras, scikit-learn) could not be converted to ONNX, or the ONNX
    model does not reproduce the framework's outputs (then `report` holds the comparison)."""

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report


class MissingDependencyError(OnnxShapError, ImportError):
    """An optional dependency (a framework, its ONNX exporter, Pillow, matplotlib) is not installed;
    the message names the pip extra that installs it."""
