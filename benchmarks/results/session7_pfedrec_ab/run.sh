#!/bin/bash
# Side by side: before (9fa7b2d engine, today's bench script) vs after (working tree), alternating.
. /work/main/.venv/bin/activate
export FEDDMR_DATA_DIR=/work/shared/data
O=/work/scratch/s7/pf
for pass in 1 2; do
  uptime
  (cd /work/wt-s7base && PYTHONPATH=/work/wt-s7base/src python benchmarks/bench_round.py --models pfedrec --skip-loop --rounds 10 --out $O/before_$pass.json 2>&1 | grep -E '^pfedrec')
  uptime
  (cd /work/main && python benchmarks/bench_round.py --models pfedrec --skip-loop --rounds 10 --out $O/after_$pass.json 2>&1 | grep -E '^pfedrec')
done
