"""How many examples each fuzz test tries: CI's default, or more for a longer run
(``SKYHOOK_FUZZ_EXAMPLES=5000 ./scripts/test tests/test_redaction.py``)."""

from __future__ import annotations

import os

FUZZ_EXAMPLES = int(os.environ.get("SKYHOOK_FUZZ_EXAMPLES", "300"))
