"""Ops refused on purpose, each with why and what to do instead: dynamic quantisation and the
integer-to-integer kernels, which leave nothing exact to attribute.

Plain data below the registry, which words its unsupported-op errors with it; the quantisation ops
that are supported live in `onnxshap.ops.quant` (docs/rules/qdq.md).
"""

from __future__ import annotations

_EXPLAIN_FLOAT = (
    "Explain the float model the quantised one was made from (the model given to onnxruntime.quantization), "
    "or quantise that model statically in QDQ format (quantize_static(..., quant_format=QuantFormat.QDQ)), whose "
    "QuantizeLinear/DequantizeLinear pairs onnxshap attributes exactly (docs/rules/qdq.md)."
)
_DYNAMIC = (
    "it belongs to dynamic quantisation (onnxruntime.quantization.quantize_dynamic): each input's scale and zero "
    "point are computed from that input's own range at run time, so every element moves the rounding grid of "
    "every other; onnxshap has no exact rule for that and does not approximate one. "
)
_QOPERATOR = (
    "it is a QOperator-format kernel (quantize_static with QuantFormat.QOperator, or onnxruntime's graph "
    "optimisations fusing QDQ pairs into integer kernels): it maps integer tensors to integer tensors, which carry "
    "no differences to attribute. Save quantised models without onnxruntime graph optimisations. "
)
_CONTRIB_QDQ = (
    "it is onnxruntime's contrib QuantizeLinear/DequantizeLinear (written for 16-bit or 4-bit types before opset "
    "21, or with extra_options={'UseQDQContribOps': True}); quantise with opset 21 or later so that the standard "
    "ONNX ops are used, which onnxshap supports. "
)
_MS = "com.microsoft"

#: Quantisation ops refused on purpose, by (domain, op type): why, and what to do instead.
REFUSED_OPS: dict[tuple[str, str], str] = {
    **{("", op): _DYNAMIC + _EXPLAIN_FLOAT for op in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")},
    **{
        (_MS, op): _DYNAMIC + _EXPLAIN_FLOAT
        for op in ("DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention")
    },
    **{("", op): _QOPERATOR + _EXPLAIN_FLOAT for op in ("QLinearConv", "QLinearMatMul")},
    **{
        (_MS, op): _QOPERATOR + _EXPLAIN_FLOAT
        for op in (
            "QLinearConv",
            "QLinearMatMul",
            "QLinearAdd",
            "QLinearMul",
            "QLinearSigmoid",
            "QLinearLeakyRelu",
            "QLinearSoftmax",
            "QLinearAveragePool",
            "QLinearGlobalAveragePool",
            "QLinearConcat",
            "QLinearWhere",
            "QLinearReduceMean",
            "QGemm",
        )
    },
    **{(_MS, op): _CONTRIB_QDQ + _EXPLAIN_FLOAT for op in ("QuantizeLinear", "DequantizeLinear")},
}


def refused_reason(op_type: str, domain: str) -> str | None:
    """Why an op is refused, and what to do, or None for any other op; `domain` normalised ("" for ai.onnx)."""
    return REFUSED_OPS.get((domain, op_type))
