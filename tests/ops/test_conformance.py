"""Forward conformance, generated from the rule table.

1. Every backend node test case shipped with the onnx package whose nodes all resolve to rows of
   the table runs through onnxshap and must match the case's expected outputs.
2. The same single-node cases, retargeted to every older since-version listed in the table (where
   the onnx checker accepts the node at that opset), must match onnxruntime.

Nothing here names an op: a new row in rules/ gets its tests automatically.

Compiling is most of a case's cost, so cases run in groups: up to GROUP_SIZE cases with the same
opsets and IR version become one onnxshap model (each case's names prefixed), compiled once; every
test still compares its own case's outputs. A case that cannot run in its group (it raises) runs
alone in its own test, so errors, skips and expected failures are the case's own.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx.backend.test.case.node import collect_testcases

import onnxshap
from onnxshap._errors import GraphError
from onnxshap._layout import is_unknown_dim
from onnxshap._registry import normalize_domain, registry, resolve_since_version
from tests.helpers import assert_outputs_close, run_ort
from tests.ops.known_failures import KNOWN_FAILURES


def _as_array(value: Any) -> Any:
    # Cases with exotic element types (float8, int4, bfloat16, ...) store TensorProtos, not arrays.
    return onnx.numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


@functools.cache
def _all_cases() -> tuple[Any, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = []
        for case in collect_testcases(None):
            if case.data_sets:
                case.data_sets = [
                    ([_as_array(x) for x in ins], [_as_array(y) for y in outs]) for ins, outs in case.data_sets
                ]
            cases.append(case)
        return tuple(cases)


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {normalize_domain(o.domain): o.version for o in model.opset_import}


def _supported_nodes(model: onnx.ModelProto, opsets: dict[str, int]) -> bool:
    reg = registry()
    nodes = list(model.graph.node)
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(attr.g.node)
    for node in nodes:
        domain = normalize_domain(node.domain)
        spec = reg.get(node.op_type, domain)
        if spec is None or domain not in opsets:
            return False
        if resolve_since_version(node.op_type, domain, opsets[domain]) not in spec.since:
            return False
    return True


def _tensor_only(case: Any) -> bool:
    graph = case.model.graph
    return all(v.type.HasField("tensor_type") for v in [*graph.input, *graph.output])


def _case_label(case: Any) -> str:
    nodes = case.model.graph.node
    return nodes[0].op_type if len(nodes) == 1 else "expanded"


def _current_cases() -> Iterator[Any]:
    for case in _all_cases():
        if case.kind != "node" or not _tensor_only(case):
            continue
        if _supported_nodes(case.model, _opsets(case.model)):
            yield case


def _older_cases() -> Iterator[tuple[Any, int]]:
    reg = registry()
    for case in _current_cases():
        nodes = case.model.graph.node
        if len(nodes) != 1:
            continue
        node = nodes[0]
        domain = normalize_domain(node.domain)
        spec = reg.get(node.op_type, domain)
        assert spec is not None
        current = resolve_since_version(node.op_type, domain, _opsets(case.model)[domain])
        for since in spec.since:
            if since < (current or 0):
                yield case, since


def _param(case: Any) -> Any:
    marks = []
    if case.name in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(reason=KNOWN_FAILURES[case.name], strict=True))
    return pytest.param(case, id=f"{_case_label(case)}-{case.name}", marks=marks)


Prepared = tuple[onnx.ModelProto, dict[str, np.ndarray]]  # a case's model and its feeds


def _freeze_static_inputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Turn graph inputs that feed a `static` position into initializers (as an exporter would)."""
    reg = registry()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    frozen: set[str] = set()
    for node in graph.node:
        spec = reg.get(node.op_type, normalize_domain(node.domain))
        if spec is None:
            continue
        for position in spec.static:
            if position < len(node.input) and node.input[position] in feeds:
                frozen.add(node.input[position])
    for name in sorted(frozen):
        graph.initializer.append(onnx.numpy_helper.from_array(feeds.pop(name), name))
    kept = [vi for vi in graph.input if vi.name not in frozen]
    del graph.input[:]
    graph.input.extend(kept)
    return model


def _prepare(model: onnx.ModelProto, inputs: list[np.ndarray]) -> Prepared:
    """The model with its static inputs frozen, and the feeds for the rest."""
    feeds = {vi.name: np.asarray(x) for vi, x in zip(model.graph.input, inputs)}
    return _freeze_static_inputs(model, feeds), feeds


# --- groups: one compilation for many cases ---------------------------------------------------

#: Cases per group. 64 cases compile as one program in about a third of the time they take one by
#: one, 32 nearly as fast; smaller groups keep the retry after a failing case cheap (_run_group).
GROUP_SIZE = 32
_PREFIX = re.compile(r"m(\d+)__")


def _rename_apart(graph: onnx.GraphProto, prefix: str) -> None:
    """Prefix every tensor, node and named dimension of `graph` and its subgraphs (in place).

    Subgraphs get the same prefix, so their references to outer-scope names still resolve.
    Dimension names that tie nothing (is_unknown_dim) stay as they are.
    """

    def dims(t: onnx.TypeProto) -> None:
        kind = t.WhichOneof("value")
        if kind in ("tensor_type", "sparse_tensor_type"):
            for d in getattr(t, kind).shape.dim:
                if d.HasField("dim_param") and not is_unknown_dim(d.dim_param):
                    d.dim_param = prefix + d.dim_param
        elif kind in ("sequence_type", "optional_type"):
            dims(getattr(t, kind).elem_type)
        elif kind == "map_type":
            dims(t.map_type.value_type)

    for info in [*graph.input, *graph.output, *graph.value_info]:
        info.name = prefix + info.name
        dims(info.type)
    for tensor in graph.initializer:
        tensor.name = prefix + tensor.name
    for sparse in graph.sparse_initializer:
        sparse.values.name = prefix + sparse.values.name
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [prefix + n if n else n for n in node.input]
        node.output[:] = [prefix + n if n else n for n in node.output]
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                _rename_apart(sub, prefix)


def _merge(members: dict[int, Prepared]) -> Prepared:
    """One model holding every member's graph, member j's names prefixed `m{j}__`; all members share
    opsets and IR version (their group's key)."""
    graph = onnx.GraphProto(name="group")
    feeds: dict[str, np.ndarray] = {}
    for j, (model, member_feeds) in members.items():
        prefix = f"m{j}__"
        part = onnx.GraphProto()
        part.CopyFrom(model.graph)
        _rename_apart(part, prefix)
        for field in ("node", "input", "output", "initializer", "sparse_initializer", "value_info"):
            getattr(graph, field).extend(getattr(part, field))
        feeds.update({prefix + k: v for k, v in member_feeds.items()})
    first = next(iter(members.values()))[0]
    merged = onnx.helper.make_model(graph, opset_imports=list(first.opset_import))
    merged.ir_version = first.ir_version
    return merged, feeds


def _run_group(members: dict[int, Prepared]) -> dict[int, dict[str, np.ndarray] | None]:
    """Each member's outputs (by its own names, in its graph's order) from one onnxshap run; None
    for a member that made the run raise, which its test then runs alone.

    An error that names a member's tensor or node (by its prefix) drops that member and tries again
    (errors come from loading or tracing, before the compilation); one that names none splits the
    group in two.
    """
    pending = dict(members)
    results: dict[int, dict[str, np.ndarray] | None] = {}
    while pending:
        merged, feeds = _merge(pending)
        try:
            got = onnxshap.load(merged).run(feeds)
        except Exception as exc:  # noqa: BLE001 - its own test runs the member alone and reports it
            named = [int(j) for j in _PREFIX.findall(str(exc)) if int(j) in pending]
            if named:
                results[named[0]] = None
                del pending[named[0]]
                continue
            if len(pending) == 1:
                results.update(dict.fromkeys(pending))
                break
            keys = list(pending)
            for half in (keys[: len(keys) // 2], keys[len(keys) // 2 :]):
                results.update(_run_group({j: pending[j] for j in half}))
            break
        for j, (model, _) in pending.items():
            results[j] = {o.name: got[f"m{j}__{o.name}"] for o in model.graph.output}
        break
    return results


class _Groups:
    """Cases registered at collection, grouped by (label, opsets, IR version); a group runs when the
    first of its tests asks for a member's outputs, and keeps them for the others."""

    def __init__(self) -> None:
        self._open: dict[tuple[Any, ...], int] = {}
        self._members: list[dict[str, Callable[[], Prepared]]] = []
        self._group_of: dict[str, int] = {}
        self._done: dict[int, dict[str, dict[str, np.ndarray] | None]] = {}

    def add(self, key: str, model: onnx.ModelProto, label: str, prepare: Callable[[], Prepared]) -> None:
        opsets = tuple(sorted((normalize_domain(o.domain), o.version) for o in model.opset_import))
        signature = (label, opsets, model.ir_version)
        group = self._open.get(signature)
        if group is None or len(self._members[group]) == GROUP_SIZE:
            group = self._open[signature] = len(self._members)
            self._members.append({})
        self._members[group][key] = prepare
        self._group_of[key] = group

    def run(self, key: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The case's outputs from its group's run, else (in no group, or it raised there) its own
        run of `model` on `feeds`."""
        group = self._group_of.get(key)
        if group is not None and group not in self._done:
            keys = list(self._members[group])
            outputs = _run_group({j: self._members[group][k]() for j, k in enumerate(keys)})
            self._done[group] = {k: outputs[j] for j, k in enumerate(keys)}
        got = None if group is None else self._done[group][key]
        return got if got is not None else onnxshap.load(model).run(feeds)


CURRENT = _Groups()
for _case in _current_cases():
    if _case.name not in KNOWN_FAILURES:  # they raise: in a group they would only cost a retry
        _label = "single" if len(_case.model.graph.node) == 1 else "expanded"
        for _index, (_inputs, _) in enumerate(_case.data_sets):
            _prepared = functools.partial(_prepare, _case.model, list(_inputs))
            CURRENT.add(f"{_case.name}#{_index}", _case.model, _label, _prepared)


@pytest.mark.parametrize("case", [_param(c) for c in _current_cases()])
def test_backend_case(case: Any) -> None:
    for index, (inputs, expected) in enumerate(case.data_sets):
        model, feeds = _prepare(case.model, list(inputs))
        try:
            got = CURRENT.run(f"{case.name}#{index}", model, feeds)
        except GraphError as exc:
            if len(case.model.graph.node) > 1 and "before the data arrives" in str(exc):
                # Function-expanded cases that compute a shape from input values: onnxshap compiles
                # static shapes and says so (this is the error under test); single-node cases never skip.
                pytest.skip(f"data-dependent shape in an expanded case: {str(exc)[:120]}")
            raise
        want = {vi.name: np.asarray(e) for vi, e in zip(case.model.graph.output, expected)}
        got, want = _defined_elements(case.model, list(inputs), got, want)
        assert_outputs_close(got, want, rtol=case.rtol, atol=max(case.atol, 1e-6))


def _defined_elements(
    model: onnx.ModelProto, inputs: list[np.ndarray], got: dict[str, np.ndarray], want: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """For a float -> integer Cast/CastLike, only the elements whose rounded input is in the target's range.

    ONNX leaves out-of-range float -> fixed-point casts undefined. onnx's case generators compute them
    with ml_dtypes, whose answer for sub-byte targets changed in 0.7 (int4: -9 wraps to 7 before, 0
    after); onnxshap wraps as onnxruntime's C conversion does.
    """
    ops = {n.op_type for n in model.graph.node}
    if not ops & {"Cast", "CastLike"} or not inputs or np.asarray(inputs[0]).dtype.kind != "f":
        return got, want
    x = np.asarray(inputs[0]).astype(np.float64)
    kept_got, kept_want = dict(got), dict(want)
    for name, w in want.items():
        if w.shape != x.shape or w.dtype.kind in "fcb" or w.dtype.kind == "V" and "float" in w.dtype.name:
            continue
        try:
            info = ml_dtypes.iinfo(w.dtype)
        except ValueError:
            continue
        rounded = np.sign(x) * np.floor(np.abs(x) + 0.5)  # the widest reading: half away from zero
        defined = np.isfinite(x) & (rounded >= int(info.min)) & (rounded <= int(info.max))
        kept_got[name], kept_want[name] = np.asarray(got[name])[defined], w[defined]
    return kept_got, kept_want


def _retarget(model: onnx.ModelProto, since: int) -> onnx.ModelProto | None:
    out = onnx.ModelProto.FromString(model.SerializeToString())
    domain = normalize_domain(out.graph.node[0].domain)
    for imp in out.opset_import:
        if normalize_domain(imp.domain) == domain:
            imp.version = since
    out.ir_version = min(out.ir_version, 8)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception:  # noqa: BLE001 - the checker refuses the node at this version: no case
        return None
    return out


#: The retargeted models of test_older_version_matches_onnxruntime, by its key (checked once, here).
RETARGETED: dict[str, onnx.ModelProto] = {}
OLDER = _Groups()


def _older_params() -> list[Any]:
    params = []
    for case, since in _older_cases():
        model = _retarget(case.model, since)
        if model is None:
            continue
        key = f"{case.name}@since{since}"
        RETARGETED[key] = model
        marks = [pytest.mark.xfail(reason=KNOWN_FAILURES[key], strict=True)] if key in KNOWN_FAILURES else []
        if key not in KNOWN_FAILURES:
            prepared = functools.partial(_prepare, model, list(case.data_sets[0][0]))
            OLDER.add(key, model, "older", prepared)
        params.append(pytest.param(case, since, id=f"{_case_label(case)}-{key}", marks=marks))
    return params


@pytest.mark.parametrize(("case", "since"), _older_params())
def test_older_version_matches_onnxruntime(case: Any, since: int) -> None:
    key = f"{case.name}@since{since}"
    inputs, _ = case.data_sets[0]
    frozen, feeds = _prepare(RETARGETED[key], list(inputs))
    got = OLDER.run(key, frozen, feeds)
    try:
        want = run_ort(frozen, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime does not implement every old version
        pytest.skip(f"onnxruntime cannot run {case.name} at since-version {since}: {str(exc)[:200]}")
    assert_outputs_close(got, want, rtol=max(case.rtol, 1e-4), atol=max(case.atol, 1e-5))
