# Shared by the bench scripts (sourced): step_ms ARGS... runs `$bin train --steps $steps ARGS...`
# and prints the median step time in ms of steps 6..$steps, read from its step lines.
step_ms() {
  "$bin" train --steps "$steps" "$@" | awk '/^step / {
      v = $6; u = $7;
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "ns") v /= 1e6;
      split($2, s, "/"); if (s[1] > 5) print v }' | sort -g |
    awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
