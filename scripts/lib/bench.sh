# Helpers the bench scripts share (sourced, not run).

# A port nothing listens on (bash's /dev/tcp: no other tool needed).
free_port() {
  local p
  while :; do
    p=$(shuf -i 40000-60000 -n 1)
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# Prints the seconds a command took; fails (printing nothing) if it failed.
timed() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" || return 1
  t1=$(date +%s.%N)
  awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.4f\n", a - b}'
}

# min, median and max of the numbers on standard input, one per line.
stats() { sort -n | awk '{a[NR]=$1} END {printf "%7.3f %7.3f %7.3f", a[1], a[int((NR+1)/2)], a[NR]}'; }
