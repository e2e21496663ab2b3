"""How many seconds ``python -m pytest -m vm`` needs on this machine now: cold builds of the images not cached, plus the run.

``.ci/run`` starts the vm marker only when what is left of CI's 90 minutes covers this.
The figures are measured runs on a 2-core shared host (see the README's emulated Pi section),
rounded up; they are estimates for a CI decision, never a goal that a test checks.

    python tests/vm/ci_budget.py          # prints seconds (an integer)
    python tests/vm/ci_budget.py --json   # and what it counted
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_image import RELEASES, cached_image
from pi_deploy import releases_from_env

# Measured on a quiet 2-core AMD EPYC (avx2, avx512_bf16; stop 16, EMULATED), the two releases side by side:
# cold builds (debootstrap through qemu-user, then mke2fs) Bookworm 369 s, Trixie 662 s; the whole marker
# per release 1,508 s (Bookworm) and 1,561 s (Trixie) with one power-cut round per point. Rounded up by about
# a third for a slower machine; .ci/run adds its own headroom on top.
COLD_BUILD_S = {"bookworm": 500, "trixie": 900}
RUN_S = {"bookworm": 2000, "trixie": 2000}


def budget(names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Seconds per release: {"build": cold build or 0 when cached, "run": the tests}."""
    return {n: {"build": 0 if cached_image(RELEASES[n]) is not None else COLD_BUILD_S[n], "run": RUN_S[n]} for n in names}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Seconds the vm marker needs here now (cold builds of uncached images + the run), "
                                             "for EDGEKIT_VM_RELEASES (default: all releases).")
    ap.add_argument("--json", action="store_true", help="print the per-release figures as JSON")
    args = ap.parse_args(argv)
    try:
        names = releases_from_env()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = budget(names)
    total = sum(r["build"] + r["run"] for r in rows.values())
    print(json.dumps({"total_s": total, "releases": rows}) if args.json else total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
