"""PyTorch twins of the benchmarked ONNX models, for shap's DeepExplainer and Captum's DeepLiftShap.

The export scripts in models/ do not save state dicts, but their TorchScript exports
(`*_ts.onnx`, `do_constant_folding=False`) keep every parameter as an initializer named by its
state-dict key. So the twin is the export script's own module class with `load_state_dict(...,
strict=True)` from those initializers: same architecture, same weights, nothing re-trained.
The light model-zoo graphs have no PyTorch source; they go through onnx2torch (optional).
Callers must still compare the twin with onnxruntime (`max_abs_diff`) before timing anything.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"

#: benchmark model -> (export script module, class name).
CLASSES: dict[str, tuple[str, str]] = {
    "torch_mlp_ts": ("export_torch", "MLP"),
    "torch_cnn_digits_ts": ("export_torch", "DigitsCNN"),
    "torch_cnn_cifar_ts": ("export_torch", "CifarCNN"),
    "torch_resblock_ts": ("export_torch", "ResBlock"),
    "seq_lstm_regressor_ts": ("export_sequence", "LSTMRegressor"),
    "seq_gru_classifier_ts": ("export_sequence", "GRUClassifier"),
    "seq_transformer_ts": ("export_sequence", "TinyTransformer"),
}


def _export_classes(script: str) -> dict[str, Any]:
    """The nn.Module classes defined in models/<script>.py, without running the script.

    Only the class definitions are executed (with torch and nn in scope): importing the script itself
    would pull in sklearn and onnxscript and pin torch to one thread and deterministic kernels.
    """
    source = (MODELS_DIR / f"{script}.py").read_text()
    tree = ast.parse(source)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "__name__": f"models.{script}"}
    code = compile(ast.Module(body=classes, type_ignores=[]), str(MODELS_DIR / f"{script}.py"), "exec")
    exec(code, namespace)  # noqa: S102 - the repository's own export script
    return {node.name: namespace[node.name] for node in classes}


def state_dict_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """Initializers of an ONNX file as a state dict (names unchanged)."""
    model = onnx.load(str(path))
    return {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy()) for i in model.graph.initializer}


def zoo_module(model_name: str) -> nn.Module:
    """The export script's module for models/<model_name>.onnx with the ONNX file's weights."""
    script, cls = CLASSES[model_name]
    module: nn.Module = _export_classes(script)[cls]()
    state = state_dict_from_onnx(MODELS_DIR / f"{model_name}.onnx")
    module.load_state_dict(state, strict=True)  # strict: every parameter and buffer must come from the file
    if script == "export_sequence":
        # As in the export: keep MultiheadAttention off its fused eval-mode kernels.
        torch.backends.mha.set_fastpath_enabled(False)
    return module.eval()


class FromEmbedding(nn.Module):
    """TinyTransformer from the token embeddings (the ONNX tensor '/tok/Gather_output_0') to the logits.

    Token ids cannot be perturbed, so every tool attributes to the embedding vectors; the padding
    mask is held at each sample's value.
    """

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.t = transformer

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = self.t
        h = embedded + t.pos
        h = t.encoder(h, src_key_padding_mask=mask == 0)
        m = mask.unsqueeze(-1).to(h.dtype)
        return t.fc((h * m).sum(dim=1) / m.sum(dim=1))


class SelectOutputs(nn.Module):
    """`model(x)[:, columns]`: lets shap's DeepExplainer explain chosen outputs only."""

    def __init__(self, model: nn.Module, columns: list[int]):
        super().__init__()
        self.model = model
        self.columns = columns

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(*args)[:, self.columns]


# --- the tiny max-pooling model of the accuracy table ---------------------------------------------


class TinyMaxPool(nn.Module):
    """12 features -> Linear(16) ReLU -> MaxPool1d(4) over the 16 units -> Linear(2): random weights, seed 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool1d(4)
        self.flatten = nn.Flatten()
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.fc1(x)).unsqueeze(1)
        return self.fc2(self.flatten(self.pool(h)))


def tiny_maxpool() -> nn.Module:
    torch.manual_seed(0)
    return TinyMaxPool().eval()


def export_tiny_maxpool(path: str | Path) -> None:
    """Write the tiny max-pooling model as ONNX (TorchScript exporter, opset 17, dynamic batch)."""
    model = tiny_maxpool()
    example = torch.zeros(2, 12)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=False,
        )


# --- light model-zoo graphs via onnx2torch -----------------------------------------------------------


def _import_onnx2torch() -> Callable[[onnx.ModelProto], nn.Module]:
    """onnx2torch's `convert`. onnx2torch imports torchvision only for its NMS and RoIAlign converters;
    the PyPI torchvision wheel does not load against the CPU build of torch 2.13, so when it is absent
    or broken a stub stands in (those two ops raise if a graph ever uses them)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken torchvision install is as good as none here
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("torchvision is not installed; onnx2torch's NMS/RoIAlign converters need it")

        ops.nms = ops.batched_nms = ops.roi_align = unavailable  # type: ignore[attr-defined]
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.ops"] = ops
    from onnx2torch import convert

    return convert


def light_module(onnx_path: str | Path) -> nn.Module:
    """onnx2torch conversion of a (folded, see `fold_light_model`) light model-zoo graph."""
    convert = _import_onnx2torch()
    return convert(onnx.load(str(onnx_path))).eval()


def fold_light_model(src: str | Path, dst: str | Path) -> None:
    """Make a light model-zoo graph batchable and convertible; the function computed is unchanged.

    The light graphs compute every weight with ConstantOfShape(fill) from a shape initializer, fix the
    batch axis at 1 and flatten with Reshape(shape=[1, n]). Here the weights become initializers, the
    batch axis becomes symbolic ("N"), the flatten shape becomes [-1, n], and inference-mode Dropout
    (an identity; onnx2torch has no converter for Dropout-7) is removed.
    """
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep_nodes = []
    new_inits = []
    renamed: dict[str, str] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            node.input[position] = renamed.get(name, name)
        if node.op_type == "Dropout":
            renamed[node.output[0]] = node.input[0]
            continue
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = onnx.numpy_helper.to_array(inits[node.input[0]])
            fill = onnx.numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
            new_inits.append(
                onnx.numpy_helper.from_array(np.full(tuple(shape), fill.item(), fill.dtype), node.output[0])
            )
            continue
        if node.op_type == "Reshape" and node.input[1] in inits:
            target = onnx.numpy_helper.to_array(inits[node.input[1]]).copy()
            if target.ndim == 1 and target.size == 2 and target[0] == 1:
                target[0] = -1
                inits[node.input[1]].CopyFrom(onnx.numpy_helper.from_array(target, node.input[1]))
        keep_nodes.append(node)
    for value in graph.output:
        value.name = renamed.get(value.name, value.name)
    del graph.node[:]
    graph.node.extend(keep_nodes)
    graph.initializer.extend(new_inits)
    produced = {i.name for i in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    data_inputs = [i for i in graph.input if i.name not in produced]
    del graph.input[:]
    graph.input.extend(data_inputs)
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    model.ir_version = max(model.ir_version, 4)  # IR >= 4: initializers need not be graph inputs
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def torch_threads(n: int | None = None) -> int:
    """Give torch `n` threads (default: every core) and return the count."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
