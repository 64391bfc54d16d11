"""ctxbudget: declarative token-budget policies for LLM context, solved exactly.

Public API (everything else is internal and may change)::

    from engine import TokenBudgetManager, BudgetItem, BudgetAllocation, BudgetStrategy
    from engine import load_policy, allocate, AuditLog

The seed names (``TokenBudgetManager``, ``BudgetItem``, ``BudgetAllocation``,
``BudgetStrategy``) keep the seed's fields, order and signatures exactly.
"""

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
from .retrieval.index import HierarchicalIndex, IndexLevel, Node
from .manager import BudgetAllocation, TokenBudgetManager
from .policy import BudgetStrategy, Policy, load_policy
from .reasons import Reason, ReasonCode
from .retrieval.search import SearchResult, SemanticSearch
from .tokens import get_tokenizer

__version__ = "0.1.0"

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
