"""`Explainer`: DeepSHAP attributions of an ONNX model, with completeness checked by default."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from onnxshap._attribution import AttributionPass
from onnxshap._convert import convert, framework_of
from onnxshap._errors import AdditivityError, InputError
from onnxshap._explanation import Explanation, additivity_rtol
from onnxshap._graph import Graph, ModelLike, TensorInfo
from onnxshap._layout import Feeds, Reading, read_feeds
from onnxshap._model import Model, load, resolve_outputs
from onnxshap._multipliers import RULES
from onnxshap._progress import ProgressCallback
from onnxshap._registry import known_op_types, registry, similar_ops
from onnxshap._tokens import check_ids, default_explained, find_embeddings, resolve_token_inputs

Check = Literal["raise", "warn", "off"]


def _check_rules(rules: Any, graph: Graph) -> dict[str, str]:
    """`rules=` as {node name or op type: rule family}. An unknown family, or a key that is neither a
    node of this model nor any op, is refused; an op the model does not use is a warning (the same
    overrides may serve several models)."""
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise InputError(f"rules must be a dict {{op type or node name: rule}}, not {type(rules).__name__}.")
    known = sorted({*RULES, *registry().alternative_rules()})
    for key, family in rules.items():
        if not isinstance(key, str) or not isinstance(family, str) or family not in known:
            raise InputError(f"rules={{{key!r}: {family!r}}}: the rule must be one of {known}.")
    op_types = {n.op_type for n in graph.nodes}
    names = {n.name for n in graph.nodes if n.name}
    for key in rules:
        if key in op_types or key in names:
            continue
        if key in known_op_types():
            warnings.warn(
                f"rules={{{key!r}: ...}}: this model has no {key} node, so the rule is not used.", stacklevel=3
            )
            continue
        near = similar_ops(key, op_types | names)
        raise InputError(
            f"rules= names {key!r}, which is neither an op type nor a node name of this model"
            + (f" (did you mean {near}?)" if near else f"; its op types are {sorted(op_types)}")
            + ". Run `onnxshap inspect MODEL` to list its nodes."
        )
    return dict(rules)


def _require_float_outputs(dtypes: Mapping[str, np.dtype[Any] | None], graph: Graph) -> None:
    """Attributions explain real-valued outputs: an integer or boolean tensor (a class label, an
    index, a mask) has no differences to distribute, and its gradient does not exist."""
    for name, dtype in dtypes.items():
        if dtype is not None and dtype.kind not in "fc":
            floats = [o.name for o in graph.outputs if o.dtype is not None and o.dtype.kind == "f"]
            raise InputError(
                f"Output {name!r} is {dtype} (a label, an index or a mask), and attributions explain float "
                "outputs. Explain the scores it is computed from"
                + (f", e.g. outputs={floats[0]!r}" if floats else " (outputs=<a float tensor>)")
                + ", with output='predicted' for each sample's top class."
            )


def _output_indices(output: Any, labels: Sequence[str]) -> list[int]:
    """The flat indices `output=` names among the output slots labelled `labels` (empty for None and
    "predicted"): ints, labels such as "probs[3]", or a list of them. Anything else is refused,
    booleans and floats included (True would silently mean output 1)."""
    if output is None or (isinstance(output, str) and output == "predicted"):
        return []
    usage = "output must be None, an int, a non-empty list of ints or output labels, or 'predicted'"
    refused = f"{usage}{f' (labels such as {labels[0]!r})' if labels else ''}, not {output!r}."
    items = [output] if isinstance(output, str) else output
    if isinstance(items, (bytes, bool, np.bool_)):
        raise InputError(refused)
    if isinstance(items, (int, np.integer)):
        return [int(items)]
    try:
        chosen = list(items)
    except TypeError:
        raise InputError(refused) from None
    if not chosen or any(isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer, str)) for i in chosen):
        raise InputError(refused)
    index = {label: k for k, label in enumerate(labels)}
    unknown = [i for i in chosen if isinstance(i, str) and i not in index]
    if unknown:
        shown = ", ".join(repr(label) for label in labels[:4]) + (f", ... {labels[-1]!r}" if len(labels) > 4 else "")
        raise InputError(
            f"{usage}; {unknown[0]!r} is not a label of the explained outputs of one sample, which are {shown} "
            f"({len(labels)} in all)."
        )
    return [index[i] if isinstance(i, str) else int(i) for i in chosen]


def _as_feeds(value: Any, names: Sequence[str], what: str) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        return {k: np.asarray(v) for k, v in value.items()}
    if len(names) != 1:
        raise InputError(
            f"The model has {len(names)} inputs {list(names)}; pass the {what} as a dict {{input_name: array}}."
        )
    return {names[0]: np.asarray(value)}


def _fixed_in_background(
    background: Any, inputs: Mapping[str, TensorInfo], fixed: Mapping[str, np.ndarray], requested: set[str]
) -> dict[str, np.ndarray]:
    """Background arrays given once with their input's declared shape (recurrent state beside rows of
    a signal): one value for every sample and reference, as if passed in `fixed=`."""
    if not isinstance(background, Mapping):
        return {}
    present = [inputs[k] for k in background if k in inputs and k not in fixed]
    if len(present) < 2:
        return {}
    arrays = {i.name: background[i.name] for i in present}
    candidates = [i.name for i in present if i.name not in requested]
    return read_feeds(present, arrays, what="background input", fixed_ok=candidates).fixed


def _drop_batch(array: np.ndarray, axis: int, rows: bool | None) -> np.ndarray:
    """`array` without the batch-of-one axis at `axis` that reading rows added (rows=True), as it is
    (False), or, for an intermediate tensor (None), without that axis where it has size 1."""
    if rows is None:
        rows = array.shape[axis : axis + 1] == (1,)
    return np.take(array, 0, axis=axis) if rows else array


def check_finite(
    feeds: Mapping[str, np.ndarray], what: str, nan_stop: Callable[[Sequence[str]], str | None] | None = None
) -> None:
    """Refuse float arrays (rows along axis 0) holding NaN or Inf, naming the rows. With `nan_stop`
    (`AttributionPass.nan_stop`), NaN (a missing value) is accepted where it finds no node whose rule
    cannot attribute it (tree ensembles, Imputer: docs/rules/tree.md)."""

    def rows_text(bad: np.ndarray) -> str:
        rows = np.flatnonzero(bad).tolist()
        return f"row(s) {rows[:10]}" + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")

    def per_row(test: Callable[[np.ndarray], np.ndarray], array: np.ndarray) -> np.ndarray:
        return np.asarray(test(array.reshape(array.shape[0], -1)).any(axis=1) if array.ndim else test(array))

    floats = {name: a for name, a in feeds.items() if a.dtype.kind in "fc"}
    with_nan = [name for name, a in floats.items() if np.isnan(a).any()]
    stop = nan_stop(with_nan) if nan_stop is not None and with_nan else None
    for name, array in floats.items():
        bad = per_row(np.isinf, array) if nan_stop is not None else per_row(lambda v: ~np.isfinite(v), array)
        if np.any(bad):
            raise InputError(
                f"The {what} for input {name!r} contains NaN or Inf in {rows_text(bad)}. Attributions of "
                "non-finite values are meaningless; drop or impute those rows."
            )
        if stop is not None and name in with_nan:
            raise InputError(
                f"The {what} for input {name!r} contains NaN in {rows_text(per_row(np.isnan, array))}, and the NaN "
                f"reaches {stop}, whose rule needs finite values. NaN is attributed only where every node it reaches "
                "routes it (tree ensembles), replaces it (an Imputer) or keeps it elementwise (rescale ops, data "
                "movement; docs/rules/tree.md). Impute those values before this node, or drop those rows."
            )


def _resolve_devices(devices: Sequence[Any] | int | str | None) -> list[Any] | None:
    if devices is None:
        return None
    import jax

    available = jax.devices()
    if devices == "all":
        return list(available)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise InputError(
                f"devices={devices}, but JAX sees {len(available)} device(s): {available}. On CPU, "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N (set before JAX starts) splits the host into N."
            )
        return list(available[:devices])
    if isinstance(devices, (str, bool)):
        raise InputError(f"devices must be a list of jax devices, a count or 'all', not {devices!r}.")
    return list(devices)


def _require_tensors(names: Sequence[str], known: set[str], kind: str, graph_names: Sequence[str]) -> None:
    for name in names:
        if name not in known:
            raise InputError(
                f"{kind} tensor {name!r} does not exist in the model. Graph {kind.lower()}s: {list(graph_names)}; "
                "any tensor produced by a node may also be named (see `onnxshap inspect`)."
            )


class Explainer:
    """DeepSHAP explainer for an ONNX model.

    Args:
        model: a path to an .onnx file, its bytes, an `onnx.ModelProto`, a loaded `onnxshap.Model`, or a
            framework model (`torch.nn.Module`, Keras model, scikit-learn estimator; needs `sample`),
            exported in memory by the framework's exporter and checked against it (`conversion`).
        background: reference rows, shape (n_background, *input_shape); a dict by input name when
            the model has several inputs. Attributions are averaged over these rows (DeepSHAP). Read
            like the samples (see `explain`): rows fed as a batch of one, or whole examples.
        inputs: tensors to attribute to (graph inputs or intermediate tensors, e.g. an embedding
            output). Default: the graph's float inputs.
        outputs: tensors to explain (e.g. the logits instead of the softmax). Default: the graph's
            first float output. Integer outputs (predicted labels) are never explained. "logits" names
            the input of the Softmax, LogSoftmax or Sigmoid computing the first float output, unless a
            tensor is named "logits" (then that tensor); `Model.tensors()` lists the names.
        rules: overrides of the rule table by op type or node name, e.g. {"MaxPool": "cross_max"}.
        check: what to do when attributions do not sum to f(x) - mean f(background): "raise"
            (AdditivityError, default), "warn", or "off".
        chunk_size: background rows per call of the multiplier pass (default: from a memory budget of an
            eighth of the available memory, 64-512 MiB per device; see `AttributionPass.plan`).
        baseline_token: for token-id inputs, one reference: every position holds this id (e.g. the pad
            id) instead of background rows; float inputs still take `background`.
        allow_gradient_fallback: ops whose composite rule is not written yet use plain gradients
            instead of raising `UnsupportedOpError`. Attributions through them are not complete; the
            Explanation lists them in `gradient_nodes` and a failed completeness check only warns.
        sample: for a framework model, an example input for the in-memory export (torch: a tensor or
            tuple of tensors; Keras: an array or dict; scikit-learn: a 2-D array).
        devices: shard the samples over several devices: a list of `jax.Device`, a count (the
            first n of `jax.devices()`), or "all". Default: one device. Results equal one device's.
        fixed: inputs with one value for every sample and reference (recurrent state, a sample
            rate, a threshold), by name, each with the shape the graph declares for it, e.g.
            {"h0": np.zeros((2, 1, 16), np.float32)}. Not explained; not given with the samples.

    Token ids: an integer input that feeds an embedding lookup is explained at the lookup's output;
    `values` then holds per-token values (n, *ids_shape, n_outputs) under the input's name and
    `embedding_values` the per-dimension ones. By default the integer input with the largest table is
    explained and other integer inputs (attention mask, segment ids) are held at the sample's values;
    name integer inputs in `inputs=` to choose. The same holds for float inputs used only as ids
    (cast to integers before the lookup; they must hold whole numbers) and for ids that are one-hot
    encoded (OneHot, or Equal against a constant range, then Cast): those are explained at the
    one-hot channels, summed per position in `values`, per channel in `embedding_values`.
    """

    def __init__(
        self,
        model: ModelLike | Model,
        background: Any = None,
        *,
        inputs: Sequence[str] | str | None = None,
        outputs: Sequence[str] | str | None = None,
        rules: Mapping[str, str] | None = None,
        check: Check = "raise",
        chunk_size: int | None = None,
        baseline_token: int | None = None,
        allow_gradient_fallback: bool = False,
        devices: Sequence[Any] | int | str | None = None,
        sample: Any = None,
        fixed: Mapping[str, Any] | None = None,
    ):
        #: For a framework model: the ParityReport of its in-memory export (framework vs onnxruntime).
        self.conversion: Any = None
        # Named outputs: ops that none of them needs (an unsupported post-processing tail) are not checked.
        requested_outputs = None if outputs is None else ([outputs] if isinstance(outputs, str) else list(outputs))
        if framework_of(model) is not None:  # never imports a framework that is not already loaded
            model = convert(model, sample, outputs=requested_outputs)
            self.conversion = model.conversion
        self.model = model if isinstance(model, Model) else load(model, requested_outputs)
        if not self.model.inputs:
            raise InputError(
                "The model has no graph inputs (its outputs are constants, or each input has an initializer and so "
                "counts as one), so there is nothing to attribute its outputs to. Model.run({}) still evaluates it; to "
                "explain it, export it with the data as graph inputs without initializers."
            )
        if check not in ("raise", "warn", "off"):
            raise InputError(f"check must be 'raise', 'warn' or 'off', not {check!r}.")
        self.check = check
        if chunk_size is not None and (
            isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
        ):
            raise InputError(
                f"chunk_size must be a whole number of background rows >= 1 (or None: automatic), not {chunk_size!r}."
            )
        self.devices = _resolve_devices(devices)
        graph = self.model.graph
        rules = _check_rules(rules, graph)
        known = set(graph.producer) | {i.name for i in graph.inputs}
        found = find_embeddings(self.model)
        by_name = {i.name: i for i in graph.inputs}
        fixed = {k: np.asarray(v) for k, v in (fixed or {}).items()}
        not_inputs = [k for k in fixed if k not in by_name]
        if not_inputs:
            raise InputError(
                f"fixed= names {not_inputs}, which are not graph inputs: "
                + ", ".join(i.describe() for i in graph.inputs)
                + "."
            )
        requested_inputs = {inputs} if isinstance(inputs, str) else set(inputs or ())
        in_background = _fixed_in_background(background, by_name, fixed, requested_inputs)
        fixed |= in_background
        if inputs is None:
            explained, self.embeddings = default_explained(graph, found, list(fixed))
            explained += [e.tensor for e in self.embeddings]
            if not explained:
                raise InputError(
                    "The model has no float inputs to attribute to and no id input (integers, or floats used only "
                    "as ids) that feeds an embedding lookup or a one-hot encoding ("
                    + ", ".join(i.describe() for i in graph.inputs)
                    + "). Name the tensors to explain from with inputs=..., e.g. an embedding output."
                )
        else:
            requested = [inputs] if isinstance(inputs, str) else list(inputs)
            self.embeddings = resolve_token_inputs(requested, found, self.model)
            token_inputs = {e.input for e in self.embeddings}
            explained = [t for t in requested if t not in token_inputs]
            explained += [e.tensor for e in self.embeddings]
        _require_tensors(explained, known, "Input", [i.name for i in graph.inputs])
        if outputs is None:
            # A ZipMap's maps are computed on the host from a probability tensor: that tensor is explained.
            floats = [
                self.model.tensor_behind(o.name)
                for o in graph.outputs
                if o.dtype is None or o.dtype.kind == "f" or self.model.tensor_behind(o.name) != o.name
            ]
            if not floats:
                raise InputError(f"The model has no float outputs to explain: {[o.describe() for o in graph.outputs]}.")
            chosen = floats[:1]
        else:
            # "logits" names the scores before a final softmax/sigmoid unless a tensor has that name.
            chosen = [self.model.tensor_behind(o) for o in resolve_outputs(graph, requested_outputs) or []]
        _require_tensors(chosen, known, "Output", self.model.output_names)
        _require_float_outputs({o: graph.value_info[o].dtype for o in chosen if o in graph.value_info}, graph)
        self.inputs = explained
        self.outputs = chosen
        explained_fixed = [k for k in fixed if k in explained]
        if explained_fixed:
            raise InputError(
                f"Input(s) {explained_fixed} are explained, so they cannot be fixed: give them rows instead."
            )
        self._pass = AttributionPass(
            self.model,
            explained,
            chosen,
            rules=rules,
            chunk_size=chunk_size,
            gradient_fallback=allow_gradient_fallback,
            fixed=fixed,
        )
        self.held_inputs = list(self._pass.held)
        #: Inputs with one value for every sample and reference (`fixed=`), by name.
        self.fixed: dict[str, np.ndarray] = fixed
        self.background_inputs: list[TensorInfo] = [
            i for i in graph.inputs if i.name not in self.held_inputs and i.name not in fixed
        ]
        self.baseline_token = baseline_token
        if baseline_token is not None:
            if not self.embeddings:
                raise InputError("baseline_token= applies to token-id inputs, and this explainer explains none.")
            # An id outside the table would be clamped silently by XLA, as in the samples (check_ids).
            outside = [e for e in self.embeddings if not -e.vocab <= int(baseline_token) < e.vocab]
            if outside:
                raise InputError(
                    f"baseline_token={baseline_token} is outside the table of {outside[0].vocab} rows that "
                    f"{outside[0].input!r} indexes; use an id in [0, {outside[0].vocab - 1}], e.g. the padding id."
                )
            token_names = {e.input for e in self.embeddings}
            self.background_inputs = [i for i in self.background_inputs if i.name not in token_names]
            if not self.background_inputs:
                background = {}
        elif background is None:
            raise InputError(
                "background is required: reference rows, shape (n_background, *input_shape) (for token ids, "
                "baseline_token=<pad id> may replace it)."
            )
        bg = _as_feeds(background, [i.name for i in self.background_inputs], "background")
        # Held inputs (attention masks) take the sample's values: rows given for them are not used.
        bg = {k: v for k, v in bg.items() if k not in self.held_inputs}
        # Values found fixed in the background (`_fixed_in_background`) are read as fixed, not as rows.
        bg = {k: v for k, v in bg.items() if k not in in_background}
        read = read_feeds(
            [*self.background_inputs, *(by_name[k] for k in fixed)], bg, what="background input", given_fixed=fixed
        )
        #: Reference examples by input name: (n_background, *example shape); see `_layout`.
        self.background: dict[str, np.ndarray] = read.examples
        #: How each background array was read ("rows" or "examples").
        self.background_readings: dict[str, Reading] = {k: v for k, v in read.readings.items() if k not in fixed}
        if read.n == 0 and (self.background or baseline_token is None):
            raise InputError("The background is empty: pass at least one reference row (shape (n_background, ...)).")
        check_finite(self.background, "background", self._pass.nan_stop)
        check_ids(self.background, self.embeddings, "background")

    def explain(
        self, x: Any, output: int | Sequence[int] | str | None = None, *, progress: bool | ProgressCallback = False
    ) -> Explanation:
        """Attribute the explained outputs at samples `x` to the explained inputs.

        Args:
            x: samples, or a dict by graph input name (inputs given as `fixed=` are left out). Each
                array is read by its rank (see `Explanation.readings`): with the input's rank, axis 0
                indexes the samples and each row is fed as a batch of one (also where the graph fixes
                its batch at 1); with one more axis, each row is a whole example (graphs without a
                batch axis). A held input (not explained, e.g. recurrent state) given with its
                declared shape instead of one row per sample is one value for every sample.
            output: None (all explained outputs), an int or list of ints (flat indices over the
                explained outputs of one sample: every element of each output tensor of one example,
                in C order), a label of one of them such as "probs[3]" (`Explanation.all_output_names`;
                a list may mix labels and ints), or "predicted" (each sample's arg-max over those).
            progress: True draws a tqdm bar on stderr: "compiling" while XLA compiles the pass for
                new shapes, then one step per (sample block, background chunk). A callable
                progress(phase, done, total) is called instead before each step, phase "compile" or
                "attribute", done of total steps finished, and once with ("done", total, total).
                Default False: nothing is shown and nothing waits.

        Returns:
            An `Explanation`; completeness is checked according to `check`.
        """
        graph_inputs = self.model.inputs
        feeds_in = _as_feeds(x, [i.name for i in graph_inputs if i.name not in self.fixed], "samples")
        for name in [k for k in feeds_in if k in self.fixed]:
            if not np.array_equal(feeds_in.pop(name), self.fixed[name]):
                raise InputError(
                    f"Input {name!r} was given one fixed value for every sample and reference (fixed=, or once in "
                    "the background), and the samples hold another value for it. Leave it out of the samples, or "
                    "build an Explainer with its new value."
                )
        read = read_feeds(graph_inputs, feeds_in, what="input", fixed_ok=self.held_inputs, given_fixed=self.fixed)
        if read.n == 0:
            raise InputError("No samples to explain: x must have shape (n_samples, ...) with n_samples >= 1.")
        feeds = self._sample_examples(read)
        check_finite(feeds, "samples", self._pass.nan_stop)
        check_ids(feeds, self.embeddings, "samples")
        # Shape inference may not know an intermediate output's dtype; the trace does.
        _require_float_outputs(self._pass.output_dtypes(feeds), self.model.graph)
        slots = self._pass.output_slots(feeds)
        labels = [s.label for s in slots]
        chosen = _output_indices(output, labels)
        n_total = len(slots)
        n_samples = read.n
        predicted = isinstance(output, str) and output == "predicted"
        if output is None:
            indices = np.tile(np.arange(n_total), (n_samples, 1))
        elif predicted:
            indices = np.argmax(self._pass.predict(feeds), axis=1)[:, None]
        else:
            bad = [i for i in chosen if not -n_total <= int(i) < n_total]
            if bad:
                raise InputError(
                    f"Output index {bad} is out of range: the explained outputs of one sample have {n_total} entries "
                    f"({labels[0]} ... {labels[-1]})."
                )
            indices = np.tile(np.array([int(i) % n_total for i in chosen]), (n_samples, 1))
        selection = np.zeros((n_samples, indices.shape[1], n_total))
        np.put_along_axis(selection, indices[:, :, None], 1.0, axis=2)
        background = self._references(feeds)
        phi, fx_all, base_all = self._pass.run(feeds, background, selection, devices=self.devices, progress=progress)
        # Values take the layout of the user's arrays: a batch-of-one axis added to rows is dropped.
        rows = {t: r == "rows" for t, r in read.readings.items()}
        lookups = {e.tensor for e in self.embeddings}
        values = {t: np.moveaxis(_drop_batch(v, 2, rows.get(t)), 1, -1) for t, v in phi.items() if t not in lookups}
        embedding_values: dict[str, np.ndarray] = {}
        for emb in self.embeddings:
            # (n, *example of the lookup, k): summed per id position of one example of the input,
            # then the batch-of-one axis of rows is dropped from both.
            full = np.moveaxis(phi[emb.tensor], 1, -1)
            from_rows = read.readings.get(emb.input) == "rows"
            per_dim = _drop_batch(full, 1, from_rows and full.shape[1:2] == (1,))
            per_position = _drop_batch(emb.per_position(full, feeds[emb.input].shape[1:]), 1, from_rows)
            # Several lookups of one input (tied tables) add up per token.
            key = emb.input if np.shape(embedding_values.get(emb.input, per_dim)) == per_dim.shape else emb.tensor
            embedding_values[key] = embedding_values.get(key, 0) + per_dim
            values[emb.input] = values.get(emb.input, 0) + per_position
        prediction = np.take_along_axis(fx_all, indices, axis=1)
        base = np.take_along_axis(base_all, indices, axis=1)
        total = sum(v.reshape(n_samples, -1, v.shape[-1]).sum(axis=1) for v in values.values())
        residual = total - (prediction - base)
        names = list(values)
        data = {t: (_drop_batch(feeds[t], 1, rows.get(t)) if t in feeds else None) for t in names}
        single = len(names) == 1
        explanation = Explanation(
            values=values[names[0]] if single else values,
            base_values=base,
            data=data[names[0]] if single else data,
            prediction=prediction,
            residual=residual,
            input_names=names,
            output_names=["predicted"] if predicted else [labels[i] for i in indices[0]],
            output_indices=indices,
            all_output_names=labels,
            embedding_values=embedding_values,
            gradient_nodes=list(self._pass.incomplete_nodes),
            readings={k: v for k, v in read.readings.items() if k not in self.fixed},
        )
        self._check(explanation, feeds, indices)
        return explanation

    def _sample_examples(self, read: Feeds) -> dict[str, np.ndarray]:
        """The samples' examples for the pass: held inputs given once are repeated per sample, and the
        background's examples must have the samples' shapes (every pair is evaluated together)."""
        feeds = dict(read.examples)
        for name, value in read.fixed.items():
            if name not in self.fixed:
                feeds[name] = np.broadcast_to(value, (read.n, *value.shape))
        for name, ref in self.background.items():
            if ref.shape[1:] != feeds[name].shape[1:]:
                raise InputError(
                    f"Input {name!r}: one sample is fed as {list(feeds[name].shape[1:])} but one background row as "
                    f"{list(ref.shape[1:])} ({read.describe()}; background: {self.background_readings[name]}). Each "
                    "sample is evaluated against every background row, so both must have the same example shape."
                )
        return feeds

    def _references(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The background rows, with the baseline token filled in to the samples' id shapes."""
        references = dict(self.background)
        if self.baseline_token is not None:
            n = next(iter(references.values())).shape[0] if references else 1
            for emb in self.embeddings:
                ids = feeds[emb.input]
                references[emb.input] = np.full((n, *ids.shape[1:]), self.baseline_token, ids.dtype)
        return references

    def _nonfinite(self, e: Explanation, feeds: Mapping[str, np.ndarray]) -> str | None:
        """Why completeness cannot hold when the model itself gives NaN or Inf (at samples or at
        background rows), with where the first non-finite value appears; None if all is finite."""
        bad_x = np.flatnonzero(~np.isfinite(e.prediction).all(axis=1))
        bad_base = np.flatnonzero(~np.isfinite(e.base_values).all(axis=1))
        if not bad_x.size and not bad_base.size:
            return None
        if bad_x.size:
            where = f"sample(s) {bad_x[:10].tolist()}" + (" ..." if bad_x.size > 10 else "")
            example = {k: v[bad_x[0]] for k, v in feeds.items()}
            what = f"The model's output f(x) is NaN or Inf at {where}"
        else:
            references = self._references(feeds)
            if self.held_inputs:  # the base depends on the sample's held inputs (a mask)
                rows_text, row = f"against the background for sample(s) {bad_base[:10].tolist()}", 0
            else:
                f_ref = self._pass.predict(references)
                bad_rows = np.flatnonzero(~np.isfinite(f_ref).all(axis=1))
                row = int(bad_rows[0]) if bad_rows.size else 0
                rows_text = f"at background row(s) {bad_rows[:10].tolist()}" + (" ..." if bad_rows.size > 10 else "")
            example = {k: v[bad_base[0]] for k, v in feeds.items()}
            example |= {k: v[row] for k, v in references.items()}
            what = f"The mean f(background) is NaN or Inf: the model's output is NaN or Inf {rows_text}"
        first = self._pass.first_nonfinite(example)
        return (
            f"{what}, so no attribution can sum to f(x) - mean f(background) (this is the model's own value, "
            "not a loss of precision)."
            + (f" It first appears at {first}." if first else "")
            + " Check the model's weights and these inputs (e.g. an attention mask of all zeros, a log of 0)."
        )

    def _check(self, e: Explanation, feeds: Mapping[str, np.ndarray], indices: np.ndarray) -> None:
        if self.check == "off":
            return
        dtype = np.dtype(e.prediction.dtype)
        rtol = additivity_rtol(dtype)
        nonfinite = self._nonfinite(e, feeds)
        if nonfinite is not None:
            if self.check == "raise":
                raise AdditivityError(nonfinite)
            warnings.warn(nonfinite, stacklevel=3)
            return
        rel = np.where(np.isnan(e.relative_residual), np.inf, e.relative_residual)
        if not np.any(rel > rtol):
            return
        b, j = np.unravel_index(int(np.argmax(rel)), rel.shape)
        sample = {k: v[b] for k, v in feeds.items()}
        reference = {k: v[0] for k, v in self._references(feeds).items()}
        nodes = self._pass.diagnose(sample, reference, int(indices[b, j]), len(e.all_output_names))
        broken = sorted(
            ((label, a, c) for label, a, c in nodes if abs(a - c) > rtol * max(abs(c), 1e-6)),
            key=lambda t: -abs(t[1] - t[2]),
        )
        lines = [f"  {label}: inputs receive {a:.6g}, outputs carry {c:.6g}" for label, a, c in broken[:8]]
        message = (
            f"Attributions do not sum to f(x) - mean f(background): relative residual {rel[b, j]:.3g} for sample {b}, "
            f"output {e.output_names[j] if e.output_names != ['predicted'] else e.all_output_names[int(indices[b, j])]} "
            f"(tolerance {rtol:g}).\n"
            + (
                "Nodes whose local rule is not complete (first background row):\n" + "\n".join(lines)
                if lines
                else "Every node's local rule is complete on the first background row; the loss comes from "
                "numerical precision. Try float64 inputs, or pass check='warn'."
            )
        )
        if e.gradient_nodes:
            message += (
                f"\n{len(e.gradient_nodes)} node(s) use plain gradients, which are not complete: "
                + ", ".join(e.gradient_nodes[:5])
                + (" ..." if len(e.gradient_nodes) > 5 else "")
            )
        if self.check == "raise" and not e.gradient_nodes:
            raise AdditivityError(message)
        warnings.warn(message, stacklevel=3)
