"""Write the webserver's OpenAPI document to docs/openapi.json (``make openapi``); the test
tests/test_api_openapi.py fails when the checked-in copy differs from the served one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tidegate.webserver.app import openapi_document

OUT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def main() -> None:
    text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
