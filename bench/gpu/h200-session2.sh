#!/usr/bin/env bash
# Second device call: the GPU benchmark of the models the first call's bench crashed on
# (dann, disentangle, dpredict: 3-channel streams) and Triple-GAN's game step at its own
# batch sizes; then seed 0's CPU run, carried at its latest checkpoint, trained on for the
# rest of the budget and scored after each epoch.
T0=$(date +%s)
BUDGET=${BUDGET:-170}
R=/tmp/res; mkdir -p $R
exec > >(tee $R/log.txt) 2>&1
source .dev/device.sh > $R/prelude.txt 2>&1 || { cat $R/prelude.txt; cp $R/log.txt $OUT/; exit 1; }
G=.dev/bin/gan-cli; B=.dev/bin/throughput; D=.dev/mnist
for b in 64 256; do
  for m in dann disentangle dpredict; do
    timeout 25 $B --model $m --steps 30 --batch $b --device cuda --json >> $OUT/rust_$b.jsonl 2>> $R/bench.err
  done
done
timeout 30 $B --model triplegan --steps 30 --device cuda --json --config '{"pretrain_steps":0}' >> $OUT/rust_tg_own.jsonl 2>> $R/bench.err
tail -n 5 $R/bench.err
echo "== triplegan resume $(( $(date +%s) - T0 )) s"
cp -a .dev/tgrun /tmp/tg
LEFT=$(( BUDGET - ($(date +%s) - T0) - 25 ))
timeout -s TERM $LEFT $G triplegan --resume /tmp/tg --device cuda --data-dir $D --quiet --checkpoint-every 200 > $R/tg.log 2>&1
tail -n 3 $R/tg.log
timeout 20 $G eval --checkpoint /tmp/tg --device cuda --data-dir $D > $R/tg_eval.txt 2>&1
tail -n 3 $R/tg_eval.txt
cp /tmp/tg/epochs.jsonl $OUT/tg_epochs.jsonl; tail -n 1200 /tmp/tg/metrics.jsonl > $OUT/tg_metrics_tail.jsonl
cp $R/tg.log $R/tg_eval.txt $OUT/ ; cp $R/log.txt $OUT/
echo "== done $(( $(date +%s) - T0 )) s"
