"""One process vs two: a stage-1 run of the tiny model through ``python -m training.launch``, once as one
plain process and once under ``accelerate launch --config_file training/accelerate/cpu2.yaml`` (two
processes, torch.distributed over gloo), with the same global batch (4 completions per step: 4 per device on
one process, 2 per device on two), the same items, KB and seed. Records TRL's per-step ``step_time`` and
``loss`` of each run (from the final checkpoint's ``trainer_state.json``) and the wall time of each launch.

The runs reuse the CI test's launch (``tests/training/test_multiprocess.py``: the same items, KB and stage
arguments), with ``--steps`` steps and one torch thread per process (two processes on two cores).

Run:

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/multiprocess_cpu.py --steps 6 \\
        --out benchmarks/figures/multiprocess_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    import tests.training.test_multiprocess as mp
    from retrieval.embedders import TextEmbedder
    from tests.training.conftest import PASSAGES
    from tests.training.helpers import tagged_text_kb
    from training.tiny_model import build_tiny_model

    mp.STEPS = args.steps
    result = {"steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_tiny_model(root / "model", seed=0)
        kb = tagged_text_kb(root / "kb", PASSAGES, TextEmbedder())
        for processes in (1, 2):
            out = root / f"out{processes}"
            start = time.perf_counter()
            run = mp.run_stage(root, root / "model", kb, out, processes)
            wall = time.perf_counter() - start
            if run.returncode != 0:
                raise SystemExit(f"{processes} process(es) failed:\n{run.stderr[-3000:]}")
            steps = mp.history(out)
            result["runs"][str(processes)] = {
                "wall_s": round(wall, 1),
                "step_time_s": [round(h["step_time"], 3) for h in steps],
                "loss": [h["loss"] for h in steps],
                "num_tokens": [h["num_tokens"] for h in steps],
                "reward": [h.get("reward") for h in steps],
            }
    result.update(
        machine=f"{platform.machine()}, {platform.processor() or 'cpu'}", date=time.strftime("%Y-%m-%d")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
