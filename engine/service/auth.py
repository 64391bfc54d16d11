"""Bearer tokens per product: who may ask for which product's decisions.

In: a JSON object ``{"<product>": ["<token>", ...], ...}`` read from the file
``--tokens FILE`` names, or from the environment variable ``CTXBUDGET_SERVE_TOKENS``
(the same JSON text). Out: :class:`Tokens`, which answers "may this ``Authorization``
header ask for this product?" with nothing, or :class:`AccessError` 401 (no token, or
one that is nobody's) or 403 (a token of another product).

Tokens are kept as SHA-256 digests and every configured digest is compared with
:func:`hmac.compare_digest` on each check (no early exit on the first match), so neither
the comparison nor the number of comparisons depends on how much of a token was right.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import Location, UsageError
from .httperrors import ServiceError

__all__ = ["ENV_TOKENS", "AccessError", "Tokens"]

#: The environment variable that may hold the tokens' JSON instead of a file.
ENV_TOKENS = "CTXBUDGET_SERVE_TOKENS"
MIN_TOKEN_CHARS = 16


class AccessError(ServiceError):
    """A request without the right bearer token: ``status`` 401 or 403."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message, status, path="$.headers.authorization")


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token digests per product (``grants``: digest → products it opens)."""

    grants: tuple[tuple[bytes, frozenset[str]], ...]

    @property
    def products(self) -> frozenset[str]:
        return frozenset(p for _, ps in self.grants for p in ps)

    @classmethod
    def parse(cls, text: str, where: str) -> Tokens:
        """Tokens from their JSON text; :class:`UsageError` ``service.bad_tokens``."""
        def bad(why: str) -> UsageError:
            return UsageError("service.bad_tokens", f"{where}: {why}; write a JSON object mapping each "
                              'product to its list of tokens, e.g. {"support-assistant": ["<32+ random '
                              'characters>"]}', location=Location(file=where))
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise bad(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or not data:
            raise bad("not a non-empty JSON object")
        by_digest: dict[bytes, set[str]] = {}
        for product, tokens in data.items():
            if not isinstance(tokens, list) or not tokens:
                raise bad(f"product {product!r} needs a non-empty list of tokens")
            for token in tokens:
                if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or token.strip() != token:
                    raise bad(f"a token of product {product!r} is not a string of at least "
                              f"{MIN_TOKEN_CHARS} characters without surrounding spaces")
                by_digest.setdefault(hashlib.sha256(token.encode()).digest(), set()).add(product)
        return cls(tuple((d, frozenset(ps)) for d, ps in sorted(by_digest.items())))

    @classmethod
    def configured(cls, file: str | None, environ: Mapping[str, str] = os.environ) -> Tokens | None:
        """The tokens of ``file``, else of :data:`ENV_TOKENS`, else None (no auth)."""
        if file is not None:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError("service.bad_tokens", f"cannot read the tokens file {file}: {exc}; "
                                 "pass a readable JSON file to --tokens", location=Location(file=file)) from None
            return cls.parse(text, file)
        if environ.get(ENV_TOKENS):
            return cls.parse(environ[ENV_TOKENS], f"${ENV_TOKENS}")
        return None

    def granted(self, header: str | None) -> frozenset[str]:
        """The products the ``Authorization`` header's bearer token opens (empty: none).
        Every digest is compared, whatever matched before."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return frozenset()
        presented = hashlib.sha256(token.strip().encode()).digest()
        found: set[str] = set()
        for digest, products in self.grants:
            if hmac.compare_digest(digest, presented):
                found |= products
        return frozenset(found)

    def check(self, header: str | None, product: str) -> None:
        """Nothing if the header's token opens ``product``; else :class:`AccessError`."""
        granted = self.granted(header)
        if not granted:
            raise AccessError("auth.unauthenticated", "no valid bearer token; send the header "
                              "'Authorization: Bearer <token>' with a token configured for this product", 401)
        if product not in granted:
            raise AccessError("auth.forbidden", "this token is not configured for the product asked for; "
                              "use that product's token", 403)
