"""ctxbudget: declarative token-budget policies for LLM context, solved exactly.

Public API (everything else is internal and may change)::

    from engine import TokenBudgetManager, BudgetItem, BudgetAllocation, BudgetStrategy
    from engine import load_policy, allocate, AuditLog

The seed names (``TokenBudgetManager``, ``BudgetItem``, ``BudgetAllocation``,
``BudgetStrategy``) keep the seed's fields, order and signatures exactly.

Every name is imported on first use (PEP 562 module ``__getattr__``): ``import engine``
and ``ctxbudget --help`` do not load the solver (OR-Tools pulls in pandas), the tokenizer
or the retrieval stack. ``_EXPORTS`` says which module defines each name; type checkers
read the same names from the ``TYPE_CHECKING`` block below.
"""

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _typing

#: The package version; ``pyproject.toml`` reads it from here (``[tool.setuptools.dynamic]``).
__version__ = "0.1.0"

#: public name -> the module (relative to ``engine``) that defines it.
_EXPORTS: dict[str, str] = {
    "Allocation": ".allocation",
    "AuditError": ".errors",
    "AuditLog": ".audit.log",
    "BudgetAllocation": ".manager",
    "BudgetItem": ".candidates",
    "BudgetStrategy": ".policy",
    "Candidate": ".candidates",
    "CandidateError": ".errors",
    "EngineError": ".errors",
    "HierarchicalIndex": ".retrieval.index",
    "IndexLevel": ".retrieval.index",
    "InfeasibleError": ".errors",
    "ItemDecision": ".allocation",
    "Location": ".errors",
    "Node": ".retrieval.index",
    "Policy": ".policy",
    "PolicyError": ".errors",
    "Reason": ".reasons",
    "ReasonCode": ".reasons",
    "RuleReport": ".allocation",
    "SearchResult": ".retrieval.search",
    "SemanticSearch": ".retrieval.search",
    "SolverError": ".errors",
    "TokenBudgetManager": ".manager",
    "TokenizerError": ".errors",
    "VerificationError": ".errors",
    "allocate": ".allocate",
    "get_tokenizer": ".tokens",
    "load_policy": ".policy",
}

#: Sorted; the same names as ``_EXPORTS`` plus ``__version__`` (tests/test_registry.py checks).
__all__ = [
    "Allocation",
    "AuditError",
    "AuditLog",
    "BudgetAllocation",
    "BudgetItem",
    "BudgetStrategy",
    "Candidate",
    "CandidateError",
    "EngineError",
    "HierarchicalIndex",
    "IndexLevel",
    "InfeasibleError",
    "ItemDecision",
    "Location",
    "Node",
    "Policy",
    "PolicyError",
    "Reason",
    "ReasonCode",
    "RuleReport",
    "SearchResult",
    "SemanticSearch",
    "SolverError",
    "TokenBudgetManager",
    "TokenizerError",
    "VerificationError",
    "__version__",
    "allocate",
    "get_tokenizer",
    "load_policy",
]

if _typing.TYPE_CHECKING:
    from .allocate import allocate
    from .allocation import Allocation, ItemDecision, RuleReport
    from .audit.log import AuditLog
    from .candidates import BudgetItem, Candidate
    from .errors import (
        AuditError,
        CandidateError,
        EngineError,
        InfeasibleError,
        Location,
        PolicyError,
        SolverError,
        TokenizerError,
        VerificationError,
    )
    from .manager import BudgetAllocation, TokenBudgetManager
    from .policy import BudgetStrategy, Policy, load_policy
    from .reasons import Reason, ReasonCode
    from .retrieval.index import HierarchicalIndex, IndexLevel, Node
    from .retrieval.search import SearchResult, SemanticSearch
    from .tokens import get_tokenizer


def __getattr__(name: str) -> object:
    """Import a public name on first use and keep it, so later look-ups are plain."""
    module = _EXPORTS.get(name)
    if module is None:
        # Not ours: AttributeError lets ``from engine import cli`` import the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(_types.ModuleType):
    """Keeps a public name bound to the public object when a submodule of the same name
    loads: importing ``engine.allocate`` (the module) must not turn ``engine.allocate``
    (the function) into a module, as the import system's ``setattr`` on the parent would."""

    def __setattr__(self, name: str, value: object) -> None:
        if (name in _EXPORTS and isinstance(value, _types.ModuleType)
                and value.__name__ == f"{__name__}.{name}"):
            return  # the submodule stays reachable through sys.modules and import statements
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
