"""Coverage-guided fuzzing of every parser of outside input (tests/fuzz/targets.py), with atheris.

Run from the repository root:

    .venv/bin/python bench/fuzz.py --seconds 300              # every target, 300 s each
    .venv/bin/python bench/fuzz.py --target sdp --seconds 600 # one target
    .venv/bin/python bench/fuzz.py --runs 20000 --seed 1      # a fixed, reproducible run
    .venv/bin/python bench/fuzz.py --list

Each target runs in a child process under libFuzzer (atheris), starting from its corpus
``tests/data/fuzz/<target>/`` with the tokens of ``tests/data/fuzz/<target>.dict``. An input
that raises anything but the parser's typed error is saved as
``tests/data/fuzz/<target>/crash-<sha1>`` (``--artifacts`` to put it elsewhere), so the test
command replays it from then on: fix the parser, rename the file ``regress-<what>`` and keep it
as the regression. New inputs that reach new code are thrown away unless ``--grow-corpus``
keeps them in the corpus folder. The summary gives runs and executions per second per target.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "fuzz"
_DONE_RE = re.compile(rb"Done (\d+) runs in (\d+) second")


def _child(name: str, libfuzzer_args: list[str]) -> None:
    """Run one target under atheris in this process (never returns)."""
    import atheris

    sys.path.insert(0, str(ROOT))
    from tests.fuzz import targets as fuzzing  # imports no parser

    target = fuzzing.TARGETS[name]
    # Instrument only the code this target drives: its coverage guides the mutations, and a
    # smaller instrumented import keeps start-up short.
    with atheris.instrument_imports(include=["cbserver"]):
        allowed = target.load()

    def test_one_input(data: bytes) -> None:
        fuzzing.one_input(target, data, allowed)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


def run_target(name: str, *, seconds: float | None = None, runs: int | None = None, seed: int = 1,
               artifacts: Path | None = None, grow_corpus: bool = False, max_len: int = 4096,
               quiet: bool = True) -> dict:
    """Fuzz one target in a child process; return its figures and any crash files written.

    ``runs`` (a fixed number of inputs, reproducible with ``seed``) or ``seconds`` bounds the
    run. The result: name, returncode, runs, seconds (wall, start-up included), exec_per_s
    (libFuzzer's average; runs over wall seconds for runs under 5 s), crashes (paths), output
    (tail of the log).
    """
    corpus = CORPUS / name
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = Path(artifacts) if artifacts is not None else corpus
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.glob("crash-*"))
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        # libFuzzer writes new interesting inputs into the FIRST corpus folder.
        dirs = [str(corpus)] if grow_corpus else [scratch, str(corpus)]
        args = [f"-seed={seed}", f"-max_len={max_len}", "-timeout=10", "-rss_limit_mb=2048",
                f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
        dictionary = CORPUS / f"{name}.dict"  # tokens of the format, so mutations build valid ones
        if dictionary.exists():
            args.append(f"-dict={dictionary}")
        if runs is not None:
            args.append(f"-runs={runs}")
        if seconds is not None:
            args.append(f"-max_total_time={max(1, int(seconds))}")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--", *args, *dirs]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        wall = time.monotonic() - start
    log = proc.stdout + proc.stderr
    done = _DONE_RE.findall(log)
    total_runs = int(done[-1][0]) if done else 0
    fuzz_seconds = int(done[-1][1]) if done else 0
    stats = re.findall(rb"stat::number_of_executed_units:\s*(\d+)", log)
    if stats:
        total_runs = int(stats[-1])
    rate = re.findall(rb"stat::average_exec_per_sec:\s*(\d+)", log)
    # libFuzzer counts whole seconds: on a short run, runs over the wall time (start-up
    # included, so a floor) says more.
    exec_per_s = int(rate[-1]) if rate and fuzz_seconds >= 5 else total_runs / wall
    crashes = sorted(set(artifacts.glob("crash-*")) - before)
    if not quiet:
        sys.stderr.write(log.decode("utf-8", "replace"))
    return {"name": name, "returncode": proc.returncode, "runs": total_runs, "seconds": wall,
            "exec_per_s": exec_per_s, "crashes": crashes,
            "output": log.decode("utf-8", "replace")[-6000:]}


def main(argv=None) -> int:
    """Command line: fuzz the named target (or all) and print a summary."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.fuzz.targets import TARGETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", choices=sorted(TARGETS),
                   help="target to fuzz (repeatable; default: all)")
    p.add_argument("--seconds", type=float, help="time per target (default 60 unless --runs)")
    p.add_argument("--runs", type=int, help="inputs per target instead of a time")
    p.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1)")
    p.add_argument("--artifacts", type=Path, help="folder for crashing inputs (default: the target's corpus)")
    p.add_argument("--grow-corpus", action="store_true", help="keep new interesting inputs in the corpus")
    p.add_argument("--max-len", type=int, default=4096, help="largest input tried (bytes)")
    p.add_argument("--verbose", action="store_true", help="show libFuzzer's log")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:14} allowed: {', '.join(a.partition(':')[2] for a in t.allowed):18} {t.what}")
        return 0
    seconds = args.seconds if args.seconds is not None or args.runs is not None else 60
    failed = 0
    print(f"{'target':14} {'runs':>9} {'exec/s':>8} {'wall s':>7}  result")
    for name in args.target or list(TARGETS):
        r = run_target(name, seconds=seconds, runs=args.runs, seed=args.seed, artifacts=args.artifacts,
                       grow_corpus=args.grow_corpus, max_len=args.max_len, quiet=not args.verbose)
        ok = r["returncode"] == 0 and not r["crashes"]
        failed += not ok
        result = "ok" if ok else ("CRASH " + " ".join(map(str, r["crashes"])) if r["crashes"]
                                  else f"exit {r['returncode']}")
        print(f"{name:14} {r['runs']:>9} {r['exec_per_s']:>8.0f} {r['seconds']:>7.1f}  {result}", flush=True)
        if not ok and not args.verbose:
            print(r["output"][-3000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
