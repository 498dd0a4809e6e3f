"""`onnxshap.load`: an ONNX model evaluated by JAX with onnxruntime's feeds-in, outputs-out contract."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import onnx

from onnxshap._errors import InputError, OutputError
from onnxshap._files import write_whole
from onnxshap._graph import Graph, ModelLike, Node, TensorInfo
from onnxshap._interpreter import fold_constants, run_graph, split_constants
from onnxshap._jit import compiler_options
from onnxshap._layout import check_dtype, check_names, dims_text, is_unknown_dim
from onnxshap._load import LoadedModel, load_graph

#: Ops whose output is not a tensor; supported only as graph outputs, evaluated on the host.
HOST_OPS = frozenset({("ai.onnx.ml", "ZipMap")})

#: `outputs="logits"`, where no tensor has that name, means the input of the one of these that
#: computes the graph's first float output (scores before the squashing: softmax, log-softmax, sigmoid).
LOGITS = "logits"
SQUASHING_OPS = frozenset({"Softmax", "LogSoftmax", "Sigmoid"})
#: Ops that pass a tensor on unchanged; looked through on the way back from a graph output.
_PASS_THROUGH = frozenset({"Identity", "Dropout"})
#: protobuf cannot serialise a message of 2 GiB or more into one file.
_PROTO_LIMIT = 2**31 - 1


def graph_tensors(graph: Graph) -> list[tuple[TensorInfo, Node]]:
    """Every tensor a node computes, in graph order, with its dtype and shape where shape inference
    found them (None otherwise) and the node that computes it: `Model.tensors()`, and what
    `onnxshap inspect --tensors` prints."""
    return [(graph.value_info.get(o) or TensorInfo(o, None, None), n) for n in graph.nodes for o in n.outputs if o]


def logits_tensor(graph: Graph) -> str:
    """The tensor `outputs="logits"` means: one named "logits" if the graph has it, else the input of the
    Softmax, LogSoftmax or Sigmoid that computes the first float graph output (through Identity and a
    ZipMap). InputError when there is no such node."""
    if LOGITS in graph.producer or any(i.name == LOGITS for i in graph.inputs):
        return LOGITS
    first = None
    for o in graph.outputs:
        name, node = o.name, graph.producer.get(o.name)
        while node is not None and ((node.domain, node.op_type) in HOST_OPS or node.op_type in _PASS_THROUGH):
            name, node = node.inputs[0], graph.producer.get(node.inputs[0])
        info = graph.value_info.get(name)
        if info is None or info.dtype is None or info.dtype.kind == "f":
            first = (o.name, name, node)
            break
    if first is not None and first[2] is not None and first[2].op_type in SQUASHING_OPS:
        return first[2].inputs[0]
    what = (
        "the model has no float output"
        if first is None
        else f"output {first[0]!r} is computed by {'a graph input' if first[2] is None else 'a ' + first[2].label}"
    )
    raise InputError(
        f'outputs="logits" names the input of the Softmax, LogSoftmax or Sigmoid that computes the model\'s first '
        f"float output, but {what} and no tensor is named 'logits'. Name the scores' tensor instead (see "
        "Model.tensors() or `onnxshap inspect --tensors`)."
    )


def resolve_outputs(graph: Graph, names: Sequence[str] | None) -> list[str] | None:
    """`names` with the alias "logits" replaced by `logits_tensor(graph)`."""
    if names is None:
        return None
    return [logits_tensor(graph) if n == LOGITS else n for n in names]


def save_proto(proto: onnx.ModelProto, path: str | Path) -> int:
    """Write `proto` to `path` whole or not at all (`OutputError`); returns the number of bytes."""
    size = proto.ByteSize()
    if size > _PROTO_LIMIT:
        raise OutputError(
            f"Cannot write {path}: the model is {size / 2**30:.1f} GiB and an .onnx file holds at most 2 GiB. Save it "
            "with its weights in a separate file: onnx.save(model.proto, path, save_as_external_data=True)."
        )
    data = proto.SerializeToString()
    write_whole(path, lambda tmp: tmp.write_bytes(data))
    return len(data)


def validate_feeds(
    inputs: Sequence[TensorInfo], feeds: Mapping[str, Any], *, what: str = "input"
) -> dict[str, np.ndarray]:
    """Check names, dtypes, ranks and fixed dims of `feeds` against `inputs`; return numpy arrays.

    Symbolic dimensions (e.g. a batch dim named "N") must agree across all inputs that share the name;
    names that only say "unknown" ("?", "", "unk__3") tie nothing.
    """
    expected = {i.name: i for i in inputs}
    check_names(inputs, list(feeds), what)
    arrays: dict[str, np.ndarray] = {}
    symbols: dict[str, tuple[int, str]] = {}
    for name, info in expected.items():
        array = np.asarray(feeds[name])
        check_dtype(info, array, what)
        if info.shape is not None:
            if array.ndim != len(info.shape):
                raise InputError(
                    f"{what.capitalize()} {name!r} has shape {list(array.shape)} (rank {array.ndim}), but the model "
                    f"expects rank {len(info.shape)}: {dims_text(info.shape)}."
                    + (" Add a batch axis with x[None]." if array.ndim + 1 == len(info.shape) else "")
                )
            for axis, (got, want) in enumerate(zip(array.shape, info.shape)):
                if isinstance(want, int) and want > 0 and got != want:
                    raise InputError(
                        f"{what.capitalize()} {name!r} has shape {list(array.shape)}, but the model expects "
                        f"{dims_text(info.shape)} (axis {axis} must be {want})."
                    )
                if isinstance(want, str) and not is_unknown_dim(want):
                    if want in symbols and symbols[want][0] != got:
                        other_size, other = symbols[want]
                        raise InputError(
                            f"Dimension {want!r} is {other_size} in {what} {other!r} but {got} in {what} {name!r}; "
                            "inputs that share a named dimension must agree on its size."
                        )
                    symbols[want] = (got, name)
        arrays[name] = array
    return arrays


class Model:
    """An ONNX model evaluated by JAX.

    `run` has onnxruntime's contract: feeds by input name in, outputs by name out, same dtypes. The
    forward pass is compiled once per combination of input shapes and dtypes.

    Attributes:
        graph: the parsed graph.
        inputs / outputs: `TensorInfo` (name, dtype, shape) of the graph's inputs and outputs.
        trace_count: how many times the forward pass was traced (compiled); for tests and diagnostics.
        conversion: the `ParityReport` of a model from `onnxshap.convert`, else None.

    `save(path)` writes the model (`proto`) to an .onnx file; `tensors()` lists every computed tensor.
    """

    def __init__(self, loaded: LoadedModel, outputs: Sequence[str] | None = None):
        self._loaded = loaded
        self.graph: Graph = loaded.graph
        self.graph.check_supported(resolve_outputs(self.graph, outputs))
        #: For a model converted from a framework (`onnxshap.convert`): the framework-vs-onnxruntime
        #: `ParityReport`; None for an ONNX model.
        self.conversion: Any = None
        self.inputs: list[TensorInfo] = list(self.graph.inputs)
        self.outputs: list[TensorInfo] = list(self.graph.outputs)
        constants = fold_constants(self.graph)
        self._embedded, host_weights = split_constants(self.graph, constants)
        # Graph outputs that are not tensors (ZipMap's sequence of maps) are computed on the host
        # from their input after the compiled part has run.
        graph_outputs = set(self.output_names)
        self._host_nodes = {
            n.outputs[0]: n
            for n in self.graph.nodes
            if (n.domain, n.op_type) in HOST_OPS and n.outputs[0] in graph_outputs
        }
        # Nodes folded at load time (their inputs are not kept) and host nodes must not run in the trace.
        self._folded = frozenset(n.index for n in self.graph.nodes if all(o in constants for o in n.outputs if o)) | {
            n.index for n in self._host_nodes.values()
        }
        with jax.enable_x64(True):
            self._weights = {k: jax.device_put(v) for k, v in host_weights.items()}
        self.trace_count = 0
        self._skips: dict[tuple[str, ...] | None, frozenset[int]] = {}
        self._checked: set[tuple[str, ...] | None] = set()
        #: XLA options for every program evaluating this graph (`onnxshap._jit.compiler_options`).
        self._compiler_options = compiler_options(self.graph)
        self._jitted = jax.jit(
            self._forward, static_argnames=("output_names",), compiler_options=self._compiler_options
        )

    @property
    def proto(self) -> onnx.ModelProto:
        """The ONNX model as read or exported (before control flow is lowered; external data inline)."""
        return self._loaded.proto

    def save(self, path: str | Path) -> None:
        """Write the model to an .onnx file, whole or not at all (`OutputError`), e.g. the export of a
        framework model: `onnxshap.convert(net, sample=x).save("net.onnx")`."""
        save_proto(self.proto, path)

    def tensors(self) -> list[TensorInfo]:
        """Every tensor the graph computes, in graph order: name, dtype and shape (None where shape
        inference could not tell). Any of these names may be given to `Explainer(outputs=...)`,
        `Explainer(inputs=...)` or `run(outputs=...)`; `onnxshap inspect --tensors` prints the same list."""
        return [info for info, _ in graph_tensors(self.graph)]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def tensor_behind(self, name: str) -> str:
        """The tensor a graph output is computed from on the host (a ZipMap's probabilities), else `name`."""
        node = self._host_nodes.get(name)
        return node.inputs[0] if node is not None else name

    def constant_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """(shape, dtype) of every tensor known before any input arrives (initializers, folded constants)."""
        items = {**self._embedded, **self._weights}
        return {k: (tuple(np.shape(v)), np.dtype(v.dtype)) for k, v in items.items() if hasattr(v, "dtype")}

    def _skip(self, outputs: Sequence[str] | None) -> frozenset[int]:
        """Nodes not to run: folded at load time, host nodes, and nodes `outputs` do not need."""
        key = None if outputs is None else tuple(outputs)
        if key not in self._skips:
            needed = {n.index for n in self.graph.needed_nodes(key)}
            self._skips[key] = self._folded | {n.index for n in self.graph.nodes if n.index not in needed}
        return self._skips[key]

    def check_needed(self, outputs: Sequence[str] | None = None) -> None:
        """Raise if computing `outputs` (default: the graph outputs) needs an unsupported op or a
        control-flow node that could not be lowered (`Node.problem`)."""
        key = None if outputs is None else tuple(outputs)
        if key in self._checked:
            return
        self.graph.check_supported(key)
        for node in self.graph.needed_nodes(key):
            if node.problem is not None:
                raise node.problem.error()
        self._checked.add(key)

    def evaluate(
        self, weights: Mapping[str, Any], feeds: Mapping[str, Any], outputs: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Run the graph (traceable): every tensor by name, from the weights and the feeds.

        With `outputs`, only the nodes those tensors need run (default: what the graph outputs need).
        """
        env: dict[str, Any] = {**self._embedded, **weights, **feeds}
        run_graph(self.graph, env, skip=self._skip(outputs))
        return env

    def _forward(
        self, weights: Mapping[str, Any], feeds: Mapping[str, Any], output_names: tuple[str, ...]
    ) -> dict[str, Any]:
        self.trace_count += 1
        env = self.evaluate(weights, feeds, output_names)
        return {name: env[name] for name in output_names}

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        """Evaluate the model.

        Args:
            feeds: one array per graph input, by name, with the dtype the model declares.
            outputs: names of the tensors to return (default: all graph outputs); intermediate
                tensors may be named too. Only the nodes they need run, so an unsupported node
                after them is no obstacle.

        Returns:
            A dict output name -> numpy array, in the order requested (a list of dicts for a
            ZipMap output, as onnxruntime returns).
        """
        arrays = validate_feeds(self.inputs, feeds)
        names = tuple(outputs) if outputs is not None else tuple(self.output_names)
        unknown = [n for n in names if n not in self.output_names and n not in self.graph.producer]
        if unknown:
            raise InputError(
                f"Unknown output name(s) {unknown}; the model's outputs are {self.output_names} (any tensor a node "
                "produces may also be requested)."
            )
        host = {n: self._host_nodes[n] for n in names if n in self._host_nodes}
        traced = tuple(dict.fromkeys([*(n for n in names if n not in host), *(h.inputs[0] for h in host.values())]))
        self.check_needed(traced)
        with jax.enable_x64(True):
            result = self._jitted(self._weights, arrays, output_names=traced)
        out: dict[str, Any] = {}
        for name in names:
            if name in host:
                node = host[name]
                assert node.spec is not None and node.since_version is not None
                out[name] = node.spec.impl(node.since_version)(np.asarray(result[node.inputs[0]]), **node.attrs)
            else:
                out[name] = np.asarray(result[name])
        return out

    def __repr__(self) -> str:
        ins = ", ".join(i.describe() for i in self.inputs)
        outs = ", ".join(o.describe() for o in self.outputs)
        return f"<onnxshap.Model ({ins}) -> ({outs}), {len(self.graph.nodes)} nodes>"


def load(model: ModelLike, outputs: Sequence[str] | None = None) -> Model:
    """Load an ONNX model for evaluation with JAX.

    Control flow is lowered into ordinary nodes (docs/rules/control-flow.md).

    Args:
        model: a path to an .onnx file, its bytes, or an `onnx.ModelProto`.
        outputs: the tensors the model will be asked for, if not (only) the graph outputs: ops
            that none of them needs are not checked.

    Raises:
        ModelLoadError: the file is missing, not ONNX, truncated or corrupt, or a tensor's dims do not
            match its data (ExternalDataError and OpsetError are subclasses for external-data and
            opset problems).
        GraphError: the graph is malformed (a cycle, a missing tensor), or it builds a constant too
            large to build (over `FOLDED_CONSTANT_MAX_BYTES`, in onnxshap._interpreter).
        UnsupportedOpError: the tensors asked for need ops without a row in the rule table (all are
            listed). An If, Loop or Scan that cannot be lowered raises when a requested tensor needs
            it (`unsupported_ops` lists it).
    """
    return Model(load_graph(model), outputs)


def unsupported_ops(model: ModelLike, outputs: Sequence[str] | None = None) -> list[str]:
    """One message per op type the model uses that onnxshap does not support, then one per If, Loop
    or Scan node it cannot lower (empty if none). Only nodes that computing `outputs` needs count
    (default: the graph outputs)."""
    return load_graph(model).graph.unsupported(outputs)
