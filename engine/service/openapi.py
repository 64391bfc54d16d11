"""Write the service's OpenAPI document: ``python -m engine.service.openapi [FILE]``
(default ``schemas/openapi.json``). tests/test_service.py keeps the committed file equal
to what the application generates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .app import create_app

__all__ = ["document", "text"]

DEFAULT = Path(__file__).resolve().parent.parent.parent / "schemas" / "openapi.json"


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes (independent of any policy folder)."""
    return create_app(None).openapi()


def text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT
    out.write_text(text(), encoding="utf-8")
    sys.stderr.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
