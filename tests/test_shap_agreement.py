"""Agreement with shap's DeepExplainer (PyTorch) where its rules are exact: ReLU MLP, CNN without max pooling.

Runs only where torch and shap are installed (not in CI); see benchmarks/README.md for the command
that installs them. On these models both tools compute the same DeepSHAP quantity (rescale for ReLU,
linear elsewhere, averaged over the background), so they must agree to float32 rounding.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import onnxshap

torch = pytest.importorskip("torch", reason="shap's DeepExplainer here runs on PyTorch (the onnxshap[torch] extra)")
shap = pytest.importorskip("shap", reason="compares with shap's DeepExplainer (in the test extra)")

#: Largest |onnxshap - shap| allowed, relative to the largest |value|.
AGREEMENT_RTOL = 1e-5


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 2 * 2, 4),
    )


def _to_onnx(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter, shap's internals
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("build", "shape"), [(_mlp, (10,)), (_cnn, (1, 8, 8))], ids=["relu_mlp", "cnn_avgpool"])
def test_deepshap_values_equal_shap_deepexplainer(build, shape: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    module = build().eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *shape)).astype(np.float32)
    background = rng.normal(size=(64, *shape)).astype(np.float32)

    ours = onnxshap.Explainer(_to_onnx(module, torch.from_numpy(x[:1])), background).explain(x)
    theirs = np.asarray(
        shap.DeepExplainer(module, torch.from_numpy(background)).shap_values(torch.from_numpy(x), check_additivity=True)
    )
    assert theirs.shape == ours.values.shape
    error = np.max(np.abs(ours.values - theirs)) / np.max(np.abs(theirs))
    assert error < AGREEMENT_RTOL, error
    assert ours.max_relative_residual < 1e-5
