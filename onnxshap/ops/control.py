"""If, Loop and Scan: lowered into ordinary nodes when the model is loaded (`onnxshap._control`).

Their rows in rules/tensor.toml exist so that the table says which since-versions were checked; the
functions here are never called, because no If, Loop or Scan node reaches the interpreter or the
attribution pass: each becomes the nodes of its branches or unrolled body, which carry the rules
(docs/rules/control-flow.md).
"""

from __future__ import annotations

from typing import Any

from onnxshap._errors import GraphError


def _lowered(op: str) -> GraphError:
    return GraphError(
        f"{op} nodes are lowered into ordinary nodes when the model is loaded (onnxshap._control); "
        f"a {op} node reached evaluation, which is a bug in onnxshap."
    )


def if_(*inputs: Any, **attrs: Any) -> Any:
    """Never called: If is inlined at load time."""
    raise _lowered("If")


def loop(*inputs: Any, **attrs: Any) -> Any:
    """Never called: Loop is unrolled at load time."""
    raise _lowered("Loop")


def scan(*inputs: Any, **attrs: Any) -> Any:
    """Never called: Scan is unrolled at load time."""
    raise _lowered("Scan")


def lowered(ctx: Any, m_out: Any) -> Any:
    """Never called: the nodes If, Loop and Scan are lowered to carry their own rules."""
    raise _lowered(ctx.node.op_type)
