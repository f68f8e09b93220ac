#!/usr/bin/env bash
# One device call: the prelude, the GPU benchmark (Rust and PyTorch, batch 64 and 256),
# then Triple-GAN (3 seeds) and its supervised-only baselines side by side for TG_SECONDS,
# each Triple-GAN run scored after every epoch. Everything lands in $OUT/results.tgz.
T0=$(date +%s)
BUDGET=${BUDGET:-555}
R=/tmp/res; mkdir -p $R/runs
exec > >(tee $R/log.txt) 2>&1
source .dev/device.sh || { cp $R/log.txt $OUT/; exit 1; }
G=.dev/bin/gan-cli; B=.dev/bin/throughput; D=.dev/mnist
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
lscpu | grep -E "Model name|^CPU\(s\)"
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
echo "== bench $(( $(date +%s) - T0 )) s"
for b in 64 256; do
  timeout 75 $B --model all --steps 50 --batch $b --device cuda --json > $R/rust_$b.jsonl 2> $R/rust_$b.err
  timeout 30 $B --model triplegan --steps 50 --batch $b --device cuda --json --config '{"pretrain_steps":0}' > $R/rust_tg_$b.jsonl 2>> $R/rust_$b.err
  timeout 40 python3 bench/bench.py --model all --device cuda --batch $b --steps 50 --json > $R/torch_$b.jsonl 2> $R/torch_$b.err
  timeout 40 python3 bench/bench.py --model all --device cuda --batch $b --steps 50 --json --freeze-d > $R/torch_lean_$b.jsonl 2>> $R/torch_$b.err
  tail -n 3 $R/rust_$b.err $R/torch_$b.err
done
TG_SECONDS=$(( BUDGET - ($(date +%s) - T0) - 60 ))
[ $TG_SECONDS -gt 330 ] && TG_SECONDS=330
echo "== triplegan $(( $(date +%s) - T0 )) s, $TG_SECONDS s of training"
watch_run() {  # score a run after each finished epoch
  local run=$1 last=0 n
  mkdir -p $run/evals
  while true; do
    n=0; [ -f $run/epochs.jsonl ] && n=$(wc -l < $run/epochs.jsonl)
    if [ "$n" -gt "$last" ]; then
      last=$n
      $G eval --checkpoint $run --device cuda --data-dir $D --n ${EVAL_N:-10000} > $run/evals/epoch$n.txt 2>&1
      cp $run/eval.json $run/evals/epoch$n.json 2>/dev/null
    fi
    [ -f $run/stopped ] && break
    sleep 5
  done
}
train() {  # name, seconds, args...
  local name=$1 secs=$2; shift 2
  timeout -s TERM $secs $G triplegan --device cuda --data-dir $D --quiet --checkpoint-every 600 --out $R/runs/$name "$@" > $R/runs/$name.log 2>&1
  touch $R/runs/$name/stopped
}
# (`wait` with no argument would also wait for the tee above: name the jobs.)
pids=()
for s in 0 1 2; do
  train tg-s$s $TG_SECONDS --seed $s --epochs 1000 & pids+=($!)
  (sleep 5; watch_run $R/runs/tg-s$s) & pids+=($!)
  train sup100-s$s $((TG_SECONDS / 2)) --seed $s --supervised-only --epochs 20 & pids+=($!)
done
train supall-s0 $((TG_SECONDS / 2)) --seed 0 --supervised-only --labels 0 --epochs 5 & pids+=($!)
wait "${pids[@]}"
echo "== final evals $(( $(date +%s) - T0 )) s"
pids=()
for run in $R/runs/*/; do
  (timeout 45 $G eval --checkpoint $run --device cuda --data-dir $D --n ${EVAL_N:-10000} > $run/eval_final.txt 2>&1) & pids+=($!)
done
wait "${pids[@]}"
tail -n 2 $R/runs/*/eval_final.txt
echo "== done $(( $(date +%s) - T0 )) s"
cd $R && find runs -name checkpoints -prune -o -type f -print | tar czf $OUT/results.tgz -T - *.jsonl *.err log.txt
cp $R/log.txt $OUT/
