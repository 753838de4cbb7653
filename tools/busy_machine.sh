#!/bin/bash
# The suite on a busy machine: the README's test command (`nox`) in two fresh
# clones of HEAD at once, ROUNDS times in a row (default 3). One line per
# round; exit 1 if any run failed. Logs: $OUT/{a,b}-ROUND.log (OUT defaults to
# a new temporary folder, printed first).
#
#     bash tools/busy_machine.sh          # about 20 minutes a round on 2 cores
#     ROUNDS=1 bash tools/busy_machine.sh
set -u
ROUNDS=${ROUNDS:-3}
NOX=${NOX:-nox}
OUT=${OUT:-$(mktemp -d)}
repo=$(git rev-parse --show-toplevel)
echo "logs in $OUT; HEAD $(git -C "$repo" rev-parse --short HEAD)"
for side in a b; do
  git clone -q "$repo" "$OUT/$side"
done
failed=0
for round in $(seq 1 "$ROUNDS"); do
  start=$(date +%s)
  for side in a b; do
    (cd "$OUT/$side" && $NOX > "$OUT/$side-$round.log" 2>&1; echo $? > "$OUT/$side-$round.rc") &
  done
  wait
  a=$(cat "$OUT/a-$round.rc") b=$(cat "$OUT/b-$round.rc")
  echo "round $round: a exit $a, b exit $b, $(( $(date +%s) - start )) s"
  [ "$a" = 0 ] && [ "$b" = 0 ] || failed=1
done
exit $failed
