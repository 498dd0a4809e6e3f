"""Quantise small float models with onnxruntime.quantization (`qdq_*`).

Run from the repository root with the export environment (see models/README.md):

    /work/exportenv/bin/python models/export_quantized.py

Writes, with `quantize_static` in QDQ format (QuantizeLinear/DequantizeLinear pairs around every
quantised op, weights stored as int8 initializers behind a DequantizeLinear):

- qdq_digits_cnn.onnx: models/torch_cnn_digits_ts.onnx, per-tensor, uint8 activations, int8
  weights, calibrated (MinMax) on the 64 rows of models/data/digits_background.npy;
- qdq_digits_cnn_pc.onnx: the same with per-channel weights and int8 activations;
- qdq_transformer_block.onnx / qdq_transformer_block_pc.onnx: a float transformer block
  (x N x 8 x 16 -> one nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, gelu,
  batch_first, dropout=0, no mask) -> mean over time -> Linear(3) logits; seeded random weights),
  exported by the TorchScript exporter (opset 17, do_constant_folding=False), calibrated on 32
  seeded standard-normal rows; per-tensor and per-channel, int8 activations and weights.

and, with `quantize_dynamic` (DynamicQuantizeLinear, ConvInteger, MatMulInteger), the negative
fixture qdq_dynamic_digits.onnx (models/torch_cnn_digits_ts.onnx), which onnxshap refuses with a
clear error. It has no manifest row: the manifest lists models onnxshap evaluates.

Each QDQ model is checked (strict shape inference + full checker), run in onnxruntime with graph
optimisations disabled (the reference semantics: with them enabled onnxruntime fuses QDQ pairs
into integer kernels and rounds differently) and compared with the float model, and merged into
models/manifest.json ("family": "qdq", plus "float_model", "quantization" and
"max_abs_diff_ort_optimized": onnxruntime with all optimisations vs without). For these rows
"max_abs_diff_vs_framework" is the quantisation error: onnxruntime on the QDQ model vs the float
model (torch for the transformer block, onnxruntime on the float ONNX file for the CNN).
`--out DIR` writes there instead (with a manifest.json of its own; the float CNN is still read
from models/).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime.quantization as oq
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _torch_common as T

torch.backends.mha.set_fastpath_enabled(False)

FAMILY = "qdq"
QUANTIZER = f"onnxruntime.quantization {ort.__version__}"
DIGITS = "torch_cnn_digits_ts"
DIGITS_PATH = os.path.join(C.MODELS_DIR, DIGITS + ".onnx")  # the committed one, also with --out


class _Rows(oq.CalibrationDataReader):
    """Calibration feeds: one row at a time, as onnxruntime's examples do."""

    def __init__(self, name: str, rows: np.ndarray):
        self._rows = iter([{name: rows[i : i + 1]} for i in range(len(rows))])

    def get_next(self):
        return next(self._rows, None)


class TransformerBlock(nn.Module):
    """x N x 8 x 16 -> one encoder layer (no mask) -> mean over time -> Linear(3)."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=16, nhead=2, dim_feedforward=32, activation="gelu", batch_first=True, dropout=0.0
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.encoder(x).mean(dim=1))


def _max_diff(a: list, b: list) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))


def quantize(src: str, name: str, rows: np.ndarray, *, per_channel: bool, activation: oq.QuantType) -> str:
    path = C.model_path(name)
    oq.quantize_static(
        src,
        path,
        _Rows("x", rows),
        quant_format=oq.QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=activation,
        weight_type=oq.QuantType.QInt8,
        calibrate_method=oq.CalibrationMethod.MinMax,
    )
    C.check_file(path)
    return path


def entry(
    name: str,
    *,
    float_model: str,
    reference: list,
    feeds: dict,
    description: str,
    input_range,
    per_channel: bool,
    activation: oq.QuantType,
    calibration: str,
    exporter_note: str,
) -> dict:
    path = C.model_path(name)
    got = C.ort_run(path, feeds, optimized=False)
    fused = C.ort_run(path, feeds)
    error = _max_diff(got, reference)
    print(
        f"  {name}: quantisation error vs float {error:.3g}; ORT optimised vs not {_max_diff(fused, got):.3g}; "
        f"{os.path.getsize(path)} bytes"
    )
    return C.describe(
        name,
        exporter=f"onnxruntime.quantization.quantize_static ({exporter_note})",
        framework=QUANTIZER,
        converter=QUANTIZER,
        max_abs_diff=error,
        description=description,
        input_range=input_range,
        extra={
            "family": FAMILY,
            "float_model": float_model,
            "quantization": {
                "format": "QDQ",
                "per_channel": per_channel,
                "activation_type": activation.name,
                "weight_type": "QInt8",
                "calibration": calibration,
            },
            "max_abs_diff_ort_optimized": float(f"{_max_diff(fused, got):.3g}"),
        },
    )


def digits(entries: dict) -> None:
    src = DIGITS_PATH
    background = np.load(os.path.join(C.MODELS_DIR, "data", "digits_background.npy"))
    samples = np.load(os.path.join(C.MODELS_DIR, "data", "digits_samples.npy"))
    reference = C.ort_run(src, {"x": samples}, optimized=False)
    calibration = "MinMax on the 64 rows of models/data/digits_background.npy"
    for name, per_channel, activation in (
        ("qdq_digits_cnn", False, oq.QuantType.QUInt8),
        ("qdq_digits_cnn_pc", True, oq.QuantType.QInt8),
    ):
        quantize(src, name, background, per_channel=per_channel, activation=activation)
        kind = "per-channel" if per_channel else "per-tensor"
        entries[name] = entry(
            name,
            float_model=f"{DIGITS}.onnx",
            reference=reference,
            feeds={"x": samples},
            description=f"QDQ {DIGITS} ({kind} int8 weights, {activation.name} activations; the Relus are absorbed "
            "by the activations' QuantizeLinear, which saturates at the zero point)",
            input_range=[0, 1],
            per_channel=per_channel,
            activation=activation,
            calibration=calibration,
            exporter_note="QDQ format",
        )


def transformer(entries: dict) -> None:
    torch.manual_seed(0)
    model = TransformerBlock().eval()
    rng = np.random.default_rng(0)
    calibration_rows = rng.standard_normal((32, 8, 16)).astype(np.float32)
    check = rng.standard_normal((3, 8, 16)).astype(np.float32)
    with torch.no_grad():
        reference = [model(torch.from_numpy(check)).numpy()]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "transformer_block.onnx")
        T.export_ts(model, (torch.from_numpy(check),), src, ["x"], ["logits"], T.batch_axes(["x", "logits"]))
        C.compare("transformer_block (float)", C.ort_run(src, {"x": check}, optimized=False), reference)
        for name, per_channel in (("qdq_transformer_block", False), ("qdq_transformer_block_pc", True)):
            quantize(src, name, calibration_rows, per_channel=per_channel, activation=oq.QuantType.QInt8)
            kind = "per-channel" if per_channel else "per-tensor"
            entries[name] = entry(
                name,
                float_model="(not kept) torch.onnx TorchScript export of models/export_quantized.py:TransformerBlock",
                reference=reference,
                feeds={"x": check},
                description=f"QDQ transformer block ({kind} int8 weights, int8 activations): x N x 8 x 16 -> "
                "nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, gelu, batch_first, "
                "dropout=0, no mask) -> mean over time -> Linear(3) logits; seeded random weights",
                input_range="normal",
                per_channel=per_channel,
                activation=oq.QuantType.QInt8,
                calibration="MinMax on 32 seeded standard-normal rows",
                exporter_note=f"QDQ format, float model from torch {torch.__version__}",
            )


def dynamic() -> None:
    path = C.model_path("qdq_dynamic_digits")
    oq.quantize_dynamic(DIGITS_PATH, path, weight_type=oq.QuantType.QInt8)
    C.check_file(path)
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    print(f"  qdq_dynamic_digits: ops {ops}; {os.path.getsize(path)} bytes (no manifest row)")


def main() -> int:
    C.parse_args(__doc__)
    run = C.Results()
    for step in (digits, transformer):
        run.attempt(step.__name__, lambda step=step: step(run.entries))
    run.attempt("dynamic", dynamic)
    return run.finish()


if __name__ == "__main__":
    raise SystemExit(main())
