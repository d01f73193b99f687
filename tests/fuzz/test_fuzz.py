"""The fuzzing harness in the test command (issue 14, "A fuzzing harness").

Two checks per target of ``tests/fuzz/targets.py``:

- every file of its corpus ``tests/data/fuzz/<target>/`` (seeds, and each crashing input
  found so far, kept as a regression) is replayed in this process: only the parser's typed
  error may come out;
- a short coverage-guided run under atheris (libFuzzer), a fixed number of inputs from a fixed
  seed so that CI is reproducible, must end without a crash. ``RUNS`` is sized for about 60 s
  in all on two loaded cores; ``bench/fuzz.py --seconds N`` runs longer.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, one_input

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "fuzz"

# Inputs per target in the bounded run: 1 to 5 s each at the rates measured on the project's
# 2-core machine under load, about 60 s in all (docs/security.md, "Fuzzing").
RUNS = {
    "sip_message": 8000, "sip_headers": 8000, "sip_uri": 40000, "sdp": 8000, "digest": 20000,
    "rtp": 100000, "rtcp": 40000, "dtmf": 10000, "callback_json": 40000, "admin_json": 30000,
    "provision": 6000, "rates_csv": 20000,
}

def _params():
    return [pytest.param(name, id=name) for name in TARGETS]


def test_every_target_has_a_corpus_and_a_budget():
    assert set(RUNS) == set(TARGETS)
    for name in TARGETS:
        assert any((CORPUS / name).iterdir()), f"tests/data/fuzz/{name}/ is empty"


@pytest.mark.parametrize("name", _params())
def test_corpus_replays_with_typed_errors_only(name):
    """Every stored input, seeds and past crashes alike, gives the typed error or nothing."""
    target = TARGETS[name]
    allowed = target.load()
    for path in sorted((CORPUS / name).iterdir()):
        try:
            one_input(target, path.read_bytes(), allowed)
        except Exception as e:  # noqa: BLE001 (the report names the file that broke the parser)
            raise AssertionError(f"{path.relative_to(ROOT)}: {type(e).__name__}: {e}") from e


def _bench_fuzz():
    spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="atheris wheels are Linux-only")
@pytest.mark.parametrize("name", _params())
def test_bounded_fuzz_run_finds_no_crash(name, tmp_path):
    """A seeded, fixed-length coverage-guided run: any crash fails and leaves its input behind."""
    pytest.importorskip("atheris", reason="pip install -e '.[test]' installs atheris")
    start = time.monotonic()
    result = _bench_fuzz().run_target(name, runs=RUNS[name], seed=1, artifacts=tmp_path)
    print(f"{name}: {result['runs']} runs, {result['exec_per_s']:.0f} exec/s, "
          f"{time.monotonic() - start:.1f} s")
    crashes = [p.read_bytes()[:200] for p in result["crashes"]]
    assert result["returncode"] == 0 and not crashes, (
        f"{name} crashed on {crashes!r} (exit {result['returncode']}):\n{result['output'][-3000:]}")
    assert result["runs"] >= RUNS[name]
