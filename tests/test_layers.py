"""The code shows its shape: every module imports only modules of its own or an earlier
stage (DESIGN.md §2, "a module of an earlier stage never imports a later one").

The table below is the order of the stages. A module missing from it fails the test, so
a new module must be placed on purpose. Imports inside functions count too (they are how
a later stage gets reached "just this once").
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"

#: Stages, earliest first. Within one stage modules may import each other.
STAGES: tuple[tuple[str, ...], ...] = (
    ("errors", "canonical", "reasons", "safeopen"),
    ("load", "encodings", "hftokenizer", "tokfiles", "tokens"),
    ("schema", "extends", "semantic", "policy"),
    ("candidates", "candbulk", "candfile", "pins", "counts", "rules", "duplicates",
     "retrieval.formats", "retrieval.corpus", "retrieval.analyzer", "retrieval.bm25", "retrieval.index", "retrieval.build",
     "retrieval.search", "retrieval.convert", "retrieval.store"),
    ("objective",),
    ("problem", "feasibility", "compile"),
    ("strategies", "strategies.params", "strategies.greedy", "strategies.balanced",
     "strategies.minknap", "strategies.knapsack", "strategies.treeknap", "strategies.lpround", "strategies.cpsat",
     "explain"),
    ("allocation",),
    ("verify_semantics", "verify"),
    ("allocate",),
    ("audit", "audit.privacy", "audit.request", "audit.policies",
     "audit.lineformat", "audit.verify", "audit.merkle", "audit.note", "audit.signing",
     "audit.log", "audit.record", "audit.recordschema", "audit.records", "audit.proofs",
     "audit.compact", "audit.segments", "audit.segproofs", "audit.retention", "audit.whatifshard"),
    ("decide", "manager", "audit.replay", "audit.show", "audit.query", "audit.export", "audit.reportsvg",
     "audit.reportassets", "audit.whatifdiff", "audit.whatif", "audit.whatifdask", "audit.whatifout"),
    ("audit.reportcard", "audit.whatifreport"),
    ("audit.report",),
    ("retrieval", "retrieval.pack"),
    ("cli", "service", "service.httperrors", "service.auth", "service.bundle", "service.metrics",
     "service.models", "service.app", "service.openapi", "service.run"),
    ("integrations", "integrations.core", "integrations.langchain", "integrations.llamaindex",
     "integrations.haystack"),
)
STAGE = {m: k for k, names in enumerate(STAGES) for m in names}
#: Outside the order: the package's lazy public API re-exports every stage.
EXEMPT = {""}


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(ENGINE.rglob("*.py")):
        parts = list(f.relative_to(ENGINE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    pkg = [p for p in pkg if p]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)]
            if node.module:
                targets = [".".join([*base, node.module])]
            else:
                targets = [".".join([*base, a.name]) for a in node.names]
            for t in targets:
                while t and t not in STAGE:
                    t = t.rpartition(".")[0]
                found.append((t, node.lineno))
    return found


def test_every_module_has_a_stage() -> None:
    missing = sorted(set(_modules()) - set(STAGE) - EXEMPT)
    assert missing == [], f"place these modules in tests/test_layers.py STAGES: {missing}"


def test_no_module_imports_a_later_stage() -> None:
    upward = []
    for name, path in _modules().items():
        if name in EXEMPT:
            continue
        for target, line in _imports(name, path):
            if target in STAGE and STAGE[target] > STAGE[name]:
                upward.append(f"engine/{path.relative_to(ENGINE)}:{line}: {name} -> {target}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself can fail: an import of a later stage is found."""
    probe = tmp_path / "policy.py"
    probe.write_text("def f():\n    from .allocation import build\n", encoding="utf-8")
    assert _imports("policy", probe) == [("allocation", 2)]
    assert STAGE["allocation"] > STAGE["policy"]
