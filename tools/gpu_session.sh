#!/bin/bash
# One device call (DEVELOPING.md, "The GPU check"): the GPU check, the CUDA tests, then a grid (GRID, default
# configs/grids/gpu_graph.yaml) with JOBS runs side by side until DEADLINE seconds; everything back as files under $OUT.
# ONLY='a b' passes --only a b to the queue (run names, split on spaces; none may begin with '-'). CHECK=0 skips the GPU check (it has a record under results/gpu/) and leaves the call's time to the grid.
# Prepared here: .gpu/data/beauty/ (the dataset's files), .gpu/cache/embeddings/emb_<key>.npz (its cached item
# embeddings), and .gpu/model_identity (the output of `python -c "from sagerec.embed import model_identity; print(model_identity())"`).
#   device run:  DEADLINE=540 JOBS=4 bash tools/gpu_session.sh      with carry [".gpu"]
T0=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD SAGEREC_DATA=$PWD/.gpu/data SAGEREC_CACHE=$PWD/.gpu/cache SAGEREC_RUNS=/tmp/runs \
       SAGEREC_TEXT_MODEL_IDENTITY=$(cat .gpu/model_identity) HF_HUB_OFFLINE=1 MPLBACKEND=Agg
mkdir -p /tmp/runs $OUT/res
nvidia-smi -L; nproc; python3 -c "import torch, numpy, pandas; print(torch.__version__, numpy.__version__, pandas.__version__)"
python3 -c "import glob, numpy as np; z=np.load(glob.glob('.gpu/cache/embeddings/emb_*.npz')[0]); np.save('.gpu/beauty_embeddings.npy', z['emb'])"  # gpu_check's input
if [ "${CHECK:-1}" != 0 ]; then timeout 90 python3 tools/gpu_check.py run --out $OUT > $OUT/gpu_check.log 2>&1; echo "gpu_check rc=$? at $(( $(date +%s)-T0 )) s"; tail -30 $OUT/gpu_check.log; fi
LEFT=$(( ${DEADLINE:-540} - ($(date +%s)-T0) ))
read -ra ONLY_RUNS <<< "${ONLY:-}"; for r in "${ONLY_RUNS[@]}"; do case $r in -*) echo "ONLY: run name $r begins with '-'"; exit 2;; esac; done
timeout -s TERM $LEFT python3 tools/grid.py run ${GRID:-configs/grids/gpu_graph.yaml} --jobs ${JOBS:-4} ${ONLY_RUNS[@]:+--only "${ONLY_RUNS[@]}"} --runner plain --results $OUT/res --poll 2 > $OUT/grid.log 2>&1 &
G=$!
timeout 120 python3 -m pytest -q -x tests/test_model.py tests/test_evaluate.py tests/test_distributed.py -k cuda -p no:cacheprovider > $OUT/cuda_tests.log 2>&1; echo "cuda tests rc=$?"; tail -3 $OUT/cuda_tests.log
while kill -0 $G 2>/dev/null; do sleep 30; echo "[$(( $(date +%s)-T0 )) s] $(grep -c finished $OUT/grid.log) finished; $(for f in /tmp/runs/[!_]*/metrics.json; do python3 -c "import json,sys; print(len(json.load(open('$f')).get('history',[])), end=' ')" 2>/dev/null; done)"; done
wait $G; echo "grid rc=$?"; tail -15 $OUT/grid.log
for d in /tmp/runs/[!_]*/; do d=${d%/}; mkdir -p $OUT/res/partial/$(basename $d); cp $d/metrics.json $d/params.json $OUT/res/partial/$(basename $d)/ 2>/dev/null; done
cp /tmp/runs/_grid/*.log $OUT/res/partial/ 2>/dev/null
tar czf $OUT/results.tgz -C $OUT res && rm -rf $OUT/res; ls -la $OUT; echo "total $(( $(date +%s)-T0 )) s"
