"""The policy folder a service serves: one product per policy file, swapped atomically.

In: a folder of policy files (``*.yaml``/``*.yml``). Each file is one product, named by
its file stem (``support-assistant.yaml`` serves ``support-assistant``); a file another
file of the folder ``extends`` is a base, not a product. Out: a :class:`Bundle`, an
immutable map product → :class:`Served` (the validated Policy, when it was loaded, the
files it was built from) plus the problems of files whose latest text is not valid.

:meth:`PolicyFolder.refresh` is cheap when nothing changed (one ``stat`` per file), and
with ``interval_s`` the folder is looked at no more than once per interval (a server
answers hundreds of requests a second; a policy edit is seen within the interval). When
a file changed, every product is loaded again and validated *before* it replaces the
running one; a product whose new text is invalid (or claims the running revision with
another digest) keeps its running policy, and the problem is reported (``/health``,
metrics). The swap is one reference assignment, so a request sees either the old bundle
or the new one, never a mix.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

from ..audit.policies import revision_conflicts
from ..extends import MAX_EXTENDS_DEPTH
from ..load import load_yaml_file
from ..errors import EngineError, Location, PolicyError
from ..policy import Policy, load_policy
from ..problem import policy_tokenizer

__all__ = ["Bundle", "PolicyFolder", "Served", "load_bundle"]

_SUFFIXES = (".yaml", ".yml")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Served:
    """One product's running policy: ``loaded_at`` is when this digest was first loaded;
    ``files`` the policy file and its ``extends`` bases (what a change is watched on)."""

    product: str
    policy: Policy
    loaded_at: str
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Bundle:
    """Products served now, and the problems of files whose latest text was refused
    (product → error; the product keeps its running policy, if it had one)."""

    products: Mapping[str, Served] = field(default_factory=lambda: MappingProxyType({}))
    problems: Mapping[str, EngineError] = field(default_factory=lambda: MappingProxyType({}))


def _policy_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def _chain(path: Path) -> tuple[str, ...]:
    """``path`` and the bases its ``extends`` names, in order (resolved paths). Only for
    telling bases from products and for watching files: a base that does not load is
    reported by the load of the policy itself."""
    out = [str(path.resolve())]
    current = path
    for _ in range(MAX_EXTENDS_DEPTH + 1):
        try:
            data = load_yaml_file(current, file=str(current)).data
        except EngineError:
            break
        base = data.get("extends") if isinstance(data, dict) else None
        if not isinstance(base, str) or not base:
            break
        current = (current.parent / base).resolve()
        if str(current) in out:
            break
        out.append(str(current))
    return tuple(out)


def _load_one(path: Path, check: Callable[[Policy], None] | None) -> Policy:
    policy = load_policy(path)
    policy_tokenizer(policy)  # an encoding not on this machine fails at load, not at first request
    if check is not None:
        check(policy)
    return policy


def load_bundle(folder: str | os.PathLike[str], previous: Bundle | None = None,
                now: Callable[[], str] = _utc_now,
                check: Callable[[Policy], None] | None = None) -> Bundle:
    """Load every product of ``folder``. Without ``previous`` (start-up) nothing is
    kept from before; with it, a product whose file no longer loads keeps its running
    policy and gets a problem instead. ``check`` is the caller's own test of a loaded
    policy (the service's: its audit log and secret), run before it may be served. Raises :class:`PolicyError`
    ``service.no_policies`` (folder missing or without policy files)."""
    root = Path(folder)
    if not root.is_dir():
        raise PolicyError("service.no_policies", f"--policies {root} is not a folder; pass the folder "
                          "that holds one policy file per product", location=Location(file=str(root)))
    files = _policy_files(root)
    if not files:
        raise PolicyError("service.no_policies", f"{root} holds no *.yaml or *.yml policy file; put one "
                          "policy per product there (the file stem names the product)",
                          location=Location(file=str(root)))
    loaded: dict[str, Policy] = {}
    problems: dict[str, EngineError] = {}
    for path in files:
        try:
            loaded[path.stem] = _load_one(path, check)
        except EngineError as exc:
            problems[path.stem] = exc
    chains = {path.stem: _chain(path) for path in files}
    bases = {f for chain in chains.values() for f in chain[1:]}
    old = previous.products if previous else {}
    products: dict[str, Served] = {}
    for path in files:
        product = path.stem
        if str(path.resolve()) in bases:
            problems.pop(product, None)  # a base is not served; its problems show in its users
            continue
        policy = loaded.get(product)
        running = old.get(product)
        if policy is not None and running is not None and policy.digest != running.policy.digest:
            clash = revision_conflicts([running.policy, policy])
            if clash:
                problems[product] = clash[0]
                policy = None
        if policy is None:
            if running is not None:
                products[product] = running
            continue
        same = running is not None and running.policy.digest == policy.digest
        products[product] = Served(product, policy, running.loaded_at if same and running else now(),
                                   chains[product])
    for product, served in old.items():  # a file removed: keep serving, say so
        if product not in products and product not in problems:
            products[product] = served
            problems[product] = PolicyError(
                "service.policy_missing", f"the policy file of product {product!r} is gone; revision "
                f"{served.policy.revision} is still served until a valid file is put back",
                location=Location(file=served.policy.file))
    for conflict in revision_conflicts([s.policy for s in products.values()]):
        if not previous:
            raise conflict
    return Bundle(MappingProxyType(products), MappingProxyType(problems))


def _fingerprint(folder: Path, bundle: Bundle) -> tuple[tuple[str, int, int, int], ...]:
    names = {str(p.resolve()) for p in _policy_files(folder)}
    names |= {f for s in bundle.products.values() for f in s.files}
    out = []
    for name in sorted(names):
        try:
            st = os.stat(name)
            out.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((name, -1, -1, -1))
    return tuple(out)


class PolicyFolder:
    """The running bundle of one folder, refreshed when a file's mtime, size or inode
    changes. Thread-safe: one thread reloads, the others keep the current bundle."""

    def __init__(self, folder: str | os.PathLike[str], *, now: Callable[[], str] = _utc_now,
                 check: Callable[[Policy], None] | None = None, strict: bool = True,
                 interval_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._clock = clock
        self._now = now
        self._check = check
        self._lock = threading.Lock()
        self.bundle = load_bundle(self.folder, now=now, check=check)
        if strict and self.bundle.problems:
            first = next(iter(self.bundle.problems.values()))
            raise first
        self._seen = _fingerprint(self.folder, self.bundle)
        self._checked = clock()
        self.reloads = 0
        self.refused = 0

    def refresh(self, *, force: bool = False) -> Bundle:
        """The current bundle, reloaded first when a watched file changed. The files are
        looked at when ``interval_s`` has passed since the last look (or ``force``);
        otherwise the running bundle is returned as it is (each record still names the
        revision that decided it: the one in the bundle returned)."""
        if not force and self.interval_s > 0:
            now = self._clock()
            if now - self._checked < self.interval_s:
                return self.bundle
            self._checked = now
        try:
            seen = _fingerprint(self.folder, self.bundle)
        except OSError:
            return self.bundle
        if seen == self._seen or not self._lock.acquire(blocking=False):
            return self.bundle
        try:
            try:
                fresh = load_bundle(self.folder, self.bundle, now=self._now, check=self._check)
            except PolicyError as exc:  # the folder vanished or was emptied: keep serving
                fresh = Bundle(self.bundle.products, MappingProxyType(
                    {p: exc for p in self.bundle.products}))
            self.reloads += 1
            self.refused += len(set(fresh.problems) - set(self.bundle.problems))
            self.bundle = fresh  # the atomic swap
            self._seen = seen
        finally:
            self._lock.release()
        return self.bundle
