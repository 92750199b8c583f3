#!/usr/bin/env bash
# One interleaved comparison of the bench binaries of each step (main config and aux.kind=none).
cd /work/main
for round in 1 2; do
  for v in 0-baseline 0-baseline+malloc 1-rows-malloc 2-first-layer-lin 3-sparse 4-contrastive; do
    bin=/tmp/hist-${v%+malloc}
    envs=""
    [[ $v == *+malloc ]] && envs="MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=67108864"
    out=$(env $envs $bin ppo --variant aux.kind=none --updates 4 --rounds 1 2>&1 | grep -E "^\| (the config|aux.kind=none) ")
    main=$(echo "$out" | awk -F'|' '/the config/ {gsub(/ /,"",$3); print $3}')
    none=$(echo "$out" | awk -F'|' '/aux.kind=none/ {gsub(/ /,"",$3); print $3}')
    echo "$round $v $main $none"
  done
done
