"""Forward implementations of ONNX ops in JAX: plain functions, one module per op family.

Conventions (every function follows them, and rules/*.toml points at them):
- ONNX inputs arrive positionally, in the schema's order; an omitted optional input is None.
- ONNX attributes arrive as keyword arguments, with the schema's defaults already filled in by the
  graph loader; a function never restates a default.
- Inputs listed as `static` in the rule table are numpy arrays (known before data arrives).
- A function returns one array, or a tuple when the op has several outputs.
- Unsupported attribute values raise `UnsupportedOpError` naming the value and what is supported.
"""
