"""The rule table: rules/*.toml loaded into frozen OpSpec rows, validated against the onnx schemas.

One row per ONNX op says which since-versions were checked, which function computes the forward
pass, which attribution rule family it belongs to, which inputs may carry attribution ("vary") and
which must be compile-time constants ("static"). Lookup resolves the model's opset to the op's
since_version through `onnx.defs.get_schema` and matches it exactly: an op or version without a row
is an `UnsupportedOpError`, never a silent fallback.

`python -m onnxshap._registry --write-docs` regenerates docs/operators.md from the table.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx.defs

from onnxshap._errors import RuleTableError, UnsupportedOpError
from onnxshap._refused import refused_reason

#: The closed set of attribution rule families (see docs/rules/index.md). A row names exactly one.
RULE_FAMILIES: Mapping[str, str] = {
    "linear": "the op is affine in its varying inputs: multipliers are the ordinary Jacobian (exact)",
    "zero": "no attribution flows through the op (shape arithmetic, comparisons, integer outputs)",
    "rescale": "one-input elementwise op: multiplier (f(x) - f(r)) / (x - r), derivative at the midpoint "
    "where |x - r| is tiny (exact for one player)",
    "shapley": "elementwise op of k varying inputs: exact k-player Shapley value over the 2^k coalitions",
    "bilinear": "product of two varying operands (MatMul, Gemm, Einsum): exact two-player Shapley value",
    "max": "max over a window or axis: exact Shapley value of the max game with a reference",
    "composite": "built from rule-carrying primitives (Softmax, LayerNormalization, LSTM, ...)",
}

#: Ops in the default ONNX domain may be spelled "" or "ai.onnx".
_DEFAULT_DOMAINS = ("", "ai.onnx")


def normalize_domain(domain: str) -> str:
    """Map the two spellings of the default domain to ""."""
    return "" if domain in _DEFAULT_DOMAINS else domain


def _rules_dir() -> Path:
    # A source checkout (and an editable install) reads the live rules/; a wheel ships a copy.
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "rules", here / "_rules"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise RuleTableError(
        f"The rule table was not found: neither {here.parent / 'rules'} nor {here / '_rules'} holds "
        "*.toml files. The installation is incomplete; reinstall onnxshap."
    )


def _import_impl(ref: str, where: str) -> Callable[..., Any]:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise RuleTableError(f"{where}: impl {ref!r} must have the form 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuleTableError(f"{where}: impl {ref!r} cannot be imported: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RuleTableError(f"{where}: impl {ref!r}: module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RuleTableError(f"{where}: impl {ref!r} is not callable.")
    return obj


@dataclass(frozen=True)
class OpSpec:
    """One row of the rule table.

    Attributes:
        domain: "" for the default ONNX domain, else e.g. "ai.onnx.ml".
        op_type: the op's name exactly as in the ONNX spec.
        since: every since_version that was checked; others raise `UnsupportedOpError`.
        impls: forward function per since_version. Inputs arrive positionally (None for an omitted
            optional input), attributes as keyword arguments with the schema defaults filled in.
        rule: the attribution rule family, a key of `RULE_FAMILIES`.
        vary: input positions that may carry attribution; any other input must not depend on the
            explained inputs.
        static: input positions that must be compile-time constants (shapes, axes, indices).
        type_only: input positions of which only the dtype is read (CastLike's target): they may
            depend on the explained inputs without carrying attribution.
        composite: for rule "composite", the hand-built rule (a `Rule` from onnxshap._composite); None
            while an op's forward pass is supported but its rule is not written yet (a clear error then).
        alternatives: rules a user may select for this op by name instead of `rule` (`rules={op: name}`,
            `--rule OP=NAME`), e.g. the tree ensembles' "tree_exact"; the table's `alternatives` key.
        notes: free text copied into docs/operators.md.
        source: "rules/<file>.toml" for error messages.
    """

    domain: str
    op_type: str
    since: tuple[int, ...]
    impls: Mapping[int, Callable[..., Any]] = field(repr=False)
    rule: str
    vary: tuple[int, ...] | None
    static: tuple[int, ...]
    type_only: tuple[int, ...]
    notes: str
    source: str
    composite: Callable[..., Any] | None = field(default=None, repr=False)
    alternatives: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type

    def impl(self, since_version: int) -> Callable[..., Any]:
        return self.impls[since_version]

    def may_vary(self, position: int) -> bool:
        if position in self.type_only:
            return True
        if position in self.static:
            return False
        return self.vary is None or position in self.vary


@functools.cache
def _all_schema_versions() -> Mapping[tuple[str, str], tuple[int, ...]]:
    versions: dict[tuple[str, str], set[int]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        versions.setdefault((normalize_domain(s.domain), s.name), set()).add(s.since_version)
    return {key: tuple(sorted(v)) for key, v in versions.items()}


def _schema_versions(op_type: str, domain: str) -> list[int]:
    return list(_all_schema_versions().get((domain, op_type), ()))


def _parse_row(op_type: str, row: Mapping[str, Any], source: str) -> OpSpec:
    where = f"{source} [{op_type}]"
    allowed = {"since", "impl", "rule", "composite", "alternatives", "vary", "static", "type_only", "domain", "notes"}
    unknown = set(row) - allowed
    if unknown:
        raise RuleTableError(f"{where}: unknown keys {sorted(unknown)}; allowed keys are {sorted(allowed)}.")
    for key in ("since", "impl", "rule"):
        if key not in row:
            raise RuleTableError(f"{where}: the required key {key!r} is missing.")
    domain = normalize_domain(str(row.get("domain", "")))
    since = row["since"]
    if not isinstance(since, list) or not since or not all(isinstance(v, int) for v in since):
        raise RuleTableError(f"{where}: 'since' must be a non-empty list of integers, got {since!r}.")
    if len(set(since)) != len(since):
        raise RuleTableError(f"{where}: 'since' lists a version twice: {since}.")
    real = _schema_versions(op_type, domain)
    if not real:
        raise RuleTableError(f"{where}: the onnx package knows no op {op_type!r} in domain {domain or 'ai.onnx'!r}.")
    bad = [v for v in since if v not in real]
    if bad:
        raise RuleTableError(f"{where}: since-versions {bad} do not exist; the schema's since-versions are {real}.")
    rule = row["rule"]
    if rule not in RULE_FAMILIES:
        raise RuleTableError(f"{where}: unknown rule family {rule!r}; known families: {sorted(RULE_FAMILIES)}.")
    composite = None
    if "composite" in row:
        if rule != "composite":
            raise RuleTableError(
                f"{where}: 'composite' names a hand-built rule, which only rule = \"composite\" rows take."
            )
        composite = _import_impl(str(row["composite"]), where)
    alternatives: dict[str, Callable[..., Any]] = {}
    table = row.get("alternatives", {})
    if not isinstance(table, Mapping) or not all(isinstance(v, str) for v in table.values()):
        raise RuleTableError(f"{where}: 'alternatives' must be a table {{rule name = \"module:function\"}}.")
    for name, target in table.items():
        if name in RULE_FAMILIES:
            raise RuleTableError(f"{where}: alternative rule {name!r} has the name of a rule family.")
        alternatives[name] = _import_impl(target, where)
    impl_spec = row["impl"]
    impls: dict[int, Callable[..., Any]] = {}
    if isinstance(impl_spec, str):
        fn = _import_impl(impl_spec, where)
        impls = {v: fn for v in since}
    elif isinstance(impl_spec, dict):
        keys = {int(k) for k in impl_spec}
        if keys != set(since):
            raise RuleTableError(
                f"{where}: 'impl' is keyed by since-version and must cover exactly {sorted(since)}, got {sorted(keys)}."
            )
        impls = {int(k): _import_impl(v, where) for k, v in impl_spec.items()}
    else:
        raise RuleTableError(f"{where}: 'impl' must be a string or a table keyed by since-version.")
    max_inputs = max(onnx.defs.get_schema(op_type, max_inclusive_version=v, domain=domain).max_input for v in since)
    positions: dict[str, tuple[int, ...] | None] = {}
    for key in ("vary", "static", "type_only"):
        value = row.get(key)
        if value is None:
            positions[key] = None
            continue
        if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
            raise RuleTableError(f"{where}: {key!r} must be a list of input positions, got {value!r}.")
        if any(v >= max_inputs for v in value):
            raise RuleTableError(f"{where}: {key!r} = {value} names an input beyond the op's {max_inputs} inputs.")
        positions[key] = tuple(value)
    static = positions["static"] or ()
    type_only = positions["type_only"] or ()
    vary = positions["vary"]
    if vary is not None and set(vary) & set(static):
        raise RuleTableError(f"{where}: inputs {sorted(set(vary) & set(static))} are both 'vary' and 'static'.")
    return OpSpec(
        domain=domain,
        op_type=op_type,
        since=tuple(sorted(since)),
        impls=impls,
        rule=rule,
        vary=vary,
        static=static,
        type_only=type_only,
        notes=str(row.get("notes", "")),
        source=source,
        composite=composite,
        alternatives=alternatives,
    )


class Registry:
    """All rows of the rule table, keyed by (domain, op_type, since_version)."""

    def __init__(self, specs: list[OpSpec]):
        self._by_op: dict[tuple[str, str], OpSpec] = {}
        for spec in specs:
            key = (spec.domain, spec.op_type)
            if key in self._by_op:
                other = self._by_op[key]
                raise RuleTableError(
                    f"{spec.qualified_name} has two rows: in {other.source} and in {spec.source}. "
                    "Keep one row per op and list all its since-versions there."
                )
            self._by_op[key] = spec

    def __iter__(self) -> Iterator[OpSpec]:
        return iter(sorted(self._by_op.values(), key=lambda s: (s.domain, s.op_type)))

    def __len__(self) -> int:
        return len(self._by_op)

    def get(self, op_type: str, domain: str = "") -> OpSpec | None:
        return self._by_op.get((normalize_domain(domain), op_type))

    def alternative_rules(self) -> set[str]:
        """The names of the rules some op of the table offers besides its own (`OpSpec.alternatives`)."""
        return {name for spec in self._by_op.values() for name in spec.alternatives}

    def resolve(self, op_type: str, domain: str, opset: int, node_name: str = "") -> tuple[OpSpec, int]:
        """Return the row and the since_version that `opset` selects, or raise `UnsupportedOpError`."""
        domain = normalize_domain(domain)
        spec = self._by_op.get((domain, op_type))
        since = resolve_since_version(op_type, domain, opset)
        if spec is not None and since in spec.since:
            return spec, since
        raise UnsupportedOpError(self.describe_unsupported(op_type, domain, opset, since, [node_name]))

    def describe_unsupported(
        self, op_type: str, domain: str, opset: int, since: int | None, node_names: list[str]
    ) -> str:
        """One paragraph explaining why an op is unsupported and what to do."""
        domain = normalize_domain(domain)
        spec = self._by_op.get((domain, op_type))
        shown = ", ".join(repr(n) for n in node_names[:5]) + (" ..." if len(node_names) > 5 else "")
        where = f"{op_type} (domain {domain or 'ai.onnx'!r}, opset {opset}"
        where += f", since_version {since})" if since is not None else ")"
        head = f"{where} used by node(s) {shown}"
        if (reason := refused_reason(op_type, domain)) is not None:
            return f"{head} is not supported: {reason}"
        if spec is not None:
            return (
                f"{head} is not supported: the rule table ({spec.source}) checks {op_type} only at "
                f"since-versions {list(spec.since)}. Export the model with an opset that selects one of "
                f"them, or verify the op's newer semantics and add the version to the row (docs/adding-an-op.md)."
            )
        if domain not in {s.domain for s in self._by_op.values()}:
            domains = sorted({s.domain or "ai.onnx" for s in self._by_op.values()})
            return (
                f"{head} is not supported: onnxshap has no ops from domain {domain!r} (supported domains: "
                f"{domains}). Re-export the model without vendor-specific fusions (for onnxruntime, "
                "disable graph optimizations when saving) so that it uses standard ONNX ops."
            )
        if since is None:
            return f"{head} is not supported: the onnx package knows no such op in this domain."
        near = similar_ops(op_type, [s.op_type for s in self._by_op.values()])
        hint = f" Similar supported ops: {near}." if near else ""
        return (
            f"{head} has no row in the rule table, so onnxshap cannot evaluate or attribute it (it never "
            f"falls back to plain gradients silently).{hint} To add it, see docs/adding-an-op.md."
        )


def similar_ops(op_type: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `names` that differ from `op_type` only by case or a misspelling (difflib ratio >=
    0.9, case ignored): names that merely share letters (Loop, LpPool) or are other ops with a
    similar name (Atanh, Tanh; MaxUnpool, MaxPool) are not suggested."""
    wanted = op_type.lower()
    scored = [(difflib.SequenceMatcher(None, wanted, name.lower()).ratio(), name) for name in set(names)]
    return [name for ratio, name in sorted(scored, key=lambda t: (-t[0], t[1])) if ratio >= 0.9][:n]


def known_op_types() -> set[str]:
    """Every op type onnx defines (any domain) or the rule table has a row for."""
    return {name for _, name in _all_schema_versions()} | {spec.op_type for spec in registry()._by_op.values()}


def max_opsets() -> dict[str, int]:
    """The newest opset of every domain the installed onnx package defines ("" for the default domain)."""
    return {normalize_domain(domain): last for domain, (_, last) in onnx.defs.C.schema_version_map().items()}


def resolve_since_version(op_type: str, domain: str, opset: int) -> int | None:
    """The since_version of `op_type` that a model importing `opset` of `domain` uses (None if unknown)."""
    try:
        return onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain=normalize_domain(domain)).since_version
    except onnx.defs.SchemaError:
        return None


def load_registry(directory: Path | None = None) -> Registry:
    """Read and validate every rules/*.toml file."""
    directory = directory or _rules_dir()
    specs: list[OpSpec] = []
    for path in sorted(directory.glob("*.toml")):
        source = f"rules/{path.name}"
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise RuleTableError(f"{source} is not valid TOML: {exc}") from exc
        for op_type, row in table.items():
            if not isinstance(row, dict):
                raise RuleTableError(f"{source}: top-level key {op_type!r} must be a table [{op_type}].")
            specs.append(_parse_row(op_type, row, source))
    return Registry(specs)


@functools.cache
def registry() -> Registry:
    """The process-wide registry, loaded once."""
    return load_registry()


def operators_markdown(reg: Registry | None = None) -> str:
    """docs/operators.md, generated from the table."""
    reg = reg or registry()
    lines = [
        "<!-- Generated by `python -m onnxshap._registry --write-docs` from rules/*.toml. Do not edit. -->",
        "# Supported operators",
        "",
        (
            f"{len(reg)} ops, {sum(len(s.since) for s in reg)} (op, since-version) entries. An op or version "
            "missing here raises `UnsupportedOpError`; nothing falls back to gradients silently."
        ),
        "",
        "| domain | op | since-versions | rule family | may vary | static inputs | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in reg:
        vary = "all" if s.vary is None else (", ".join(map(str, s.vary)) or "none")
        static = ", ".join(map(str, s.static)) or "-"
        rule = s.rule if s.rule != "composite" or s.composite is not None else "composite (rule not written yet)"
        if s.alternatives:
            rule += f" (or {', '.join(f'`{name}`' for name in s.alternatives)})"
        lines.append(
            f"| {s.domain or 'ai.onnx'} | {s.op_type} | {', '.join(map(str, s.since))} | {rule} | {vary} "
            f"| {static} | {s.notes} |"
        )
    lines += ["", "## Rule families", ""]
    lines += [f"- **{name}**: {text}." for name, text in RULE_FAMILIES.items()]
    return "\n".join(lines) + "\n"


def _docs_path() -> Path:
    return Path(__file__).resolve().parent.parent / "docs" / "operators.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnxshap._registry", description=__doc__)
    parser.add_argument("--write-docs", action="store_true", help="regenerate docs/operators.md")
    args = parser.parse_args(argv)
    text = operators_markdown()
    if args.write_docs:
        _docs_path().write_text(text, encoding="utf-8")
        print(f"wrote {_docs_path()}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
