"""Train the tiny models ``midefend demo`` ships (midefend/assets/demo/*.safetensors), from scratch.

    python benchmarks/demo_models.py                 # writes midefend/assets/demo/
    python benchmarks/demo_models.py --out /tmp/demo # anywhere else

The same training as ``midefend demo --train`` (:func:`midefend.evaluation.demo.train_demo_models`): an
undefended and a MIDRE+CALoR target on the private digits 0-4, an evaluation model of another architecture on the
same digits, a DCGAN prior on the public digits 5-9. Each file records in its ``provenance`` metadata what it is,
this command, the git commit, the seed and its training time (``midefend inspect --json FILE`` shows the
checkpoints' metadata; ``safetensors`` ``safe_open(...).metadata()`` any of them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from midefend.evaluation.demo import DEMO_ASSETS, train_demo_models


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_ASSETS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = train_demo_models(
        args.out, seed=args.seed, progress=False,
        provenance={"command": "python benchmarks/demo_models.py" + (f" --seed {args.seed}" if args.seed else ""), "git_commit": _commit()},
    )  # fmt: skip
    total = sum(p.stat().st_size for p in paths.values())
    print(f"wrote {', '.join(str(p) for p in paths.values())} ({total / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
