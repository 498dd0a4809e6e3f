"""Backend test cases onnxshap is known to fail, each with the reason (checked strictly: xfail(strict=True)).

Keys are case names, or "<case>@since<N>" for a case retargeted to an older since-version.
Each op family keeps its entries in its own dict below.
"""

ELEMENTWISE: dict[str, str] = {}

NN: dict[str, str] = {}

TENSOR: dict[str, str] = {}

ML: dict[str, str] = {}

KNOWN_FAILURES: dict[str, str] = {**ELEMENTWISE, **NN, **TENSOR, **ML}
