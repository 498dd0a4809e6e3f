"""Framework models -> ONNX with each framework's own exporter, checked against onnxruntime.

One module per framework (`_torch`, `_keras`, `_sklearn`: the converter and the file loader),
`_pickle` for pickled files (refused unless trusted), `_core` for what they share (the parity
check, test inputs, naming) and `_dispatch` for the entry points, which pick the framework.

The frameworks are optional extras (`pip install 'onnxshap[torch]'`, `[keras]`, `[sklearn]`),
imported only when one of their models is converted. Every conversion runs the framework's model
and onnxruntime on the same input (the sample given, or a seeded random one) and compares every
output; a difference over `atol + rtol * |framework output|` raises `ConversionError` with the
`ParityReport` attached.
"""

from onnxshap._convert._core import OutputParity, ParityReport
from onnxshap._convert._dispatch import (
    SUPPORTED_SUFFIXES,
    convert,
    convert_file,
    convert_object,
    framework_of,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "OutputParity",
    "ParityReport",
    "convert",
    "convert_file",
    "convert_object",
    "framework_of",
]
