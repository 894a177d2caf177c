"""scripts/bench_notify_floor.py: the kernel's notification round trip, measured without guard.

Not a timing test (rates are only printed): it checks that the measurement measures what it says, that
every variant's supervisor really answers each call (the C child exits 3 on any answer that is not the
one the variant gives: a descriptor for ADDFD, the parent's pid otherwise), on this kernel, as root and
as nobody.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_notify_floor.py"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build scripts/notify_floor.c")


def test_every_variant_answers_every_call_and_reports_its_rate() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--calls", "2000", "--rounds", "1"], capture_output=True,
                         text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("bare", "filter", "continue_1", "continue_2", "continue_1_nosync", "addfd_1", "addfd_2",
                "addfd_3", "addfd_2_one_in_recv", "addfd_1_spin", "addfd_1_one_cpu"):
        assert result[f"{key}_per_s"] > 0, key
    assert result["addfd_ceiling_per_s"] == max(v for k, v in result.items()
                                                if k.startswith("addfd_") and "cpu" not in k and k != "addfd_ceiling_per_s")
    assert "ceiling of any write-open answer" in res.stdout
    assert result["cpus"] >= 1


def test_a_child_given_the_wrong_answer_fails_the_measurement(tmp_path: Path) -> None:
    """The self-check is real: a child that expects its parent's pid but is answered with descriptors
    (ADDFD) exits 3, and so does the measurement."""
    source = (REPO / "scripts" / "notify_floor.c").read_text()
    # the child's expectation inverted: descriptors are what it will get, its parent's pid what it expects
    broken = source.replace("int fds = inject >= 0;", "int fds = inject < 0;")
    assert broken != source
    (tmp_path / "broken.c").write_text(broken)
    binary = tmp_path / "broken"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(tmp_path / "broken.c")], check=True,
                   capture_output=True, timeout=120)
    res = subprocess.run([str(binary), "500", "addfd", "1", "-1", "-1", "2", "0"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode != 0 and "answered" in res.stderr, (res.returncode, res.stderr)
