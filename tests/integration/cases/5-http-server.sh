# shellcheck shell=bash
# python3 -m http.server + curl: every file byte-exact, a few downloads at once.

case_python_http() {
  local p f b code
  p=$(port)
  # -u: unbuffered, so the log has everything; SIGINT stops it cleanly (KeyboardInterrupt, exit 0).
  start_server http-server "$PY" -u -m http.server --bind 127.0.0.1 --directory "$DATA/www" "$p"
  local srv=$SRV_PID
  wait_port "$p" "$srv"
  mkdir -p got
  get_each_file "$p"
  # Several URLs in one curl (HTTP/1.0 server: one connection each), and 3 curls at once.
  local args=() names=()
  for f in "$DATA"/www/*.bin; do
    b=$(basename "$f"); names+=("$b")
    args+=(-o "got/multi-$b" "http://127.0.0.1:$p/$b")
  done
  cl client curl -sS --max-time 50 -w '%{http_code}\n' "${args[@]}" >multi.out || die "multi-URL curl exited with status $?"
  [[ $(sort -u multi.out) == 200 && $(wc -l <multi.out) == "${#names[@]}" ]] || die "multi-URL statuses: $(tr '\n' ' ' <multi.out)"
  for b in "${names[@]}"; do same_file "multi-URL GET /$b" "got/multi-$b" "$DATA/www/$b"; done
  sig "one curl, ${#names[@]} URLs: all 200 and byte-exact"
  local pids=() i rc
  for i in 1 2 3; do
    cl client curl -sS --max-time 50 -o "got/par$i" -w '%{http_code}' "http://127.0.0.1:$p/big.bin" >"par$i.code" 2>"par$i.err" &
    pids+=($!)
  done
  for i in 1 2 3; do
    rc=0; wait "${pids[$((i - 1))]}" || rc=$?
    ((rc == 0)) || die "concurrent curl $i exited with status $rc: $(cat "par$i.err")"
    [[ $(cat "par$i.code") == 200 ]] || die "concurrent curl $i: HTTP $(cat "par$i.code")"
    same_file "concurrent GET /big.bin #$i" "got/par$i" "$DATA/www/big.bin"
  done
  sig "concurrent: 3 x GET /big.bin 200 byte-exact"
  code=$(cl client curl -sS --max-time 50 -o got/missing -w '%{http_code}' "http://127.0.0.1:$p/missing.bin") ||
    die "curl of a missing file exited with status $?"
  [[ $code == 404 ]] || die "GET /missing.bin: HTTP $code"
  sig "missing: 404"
  stop_server "$srv" INT
  ((SRV_RC == 0)) || die "http.server exited with status $SRV_RC"
  sig "exit http.server 0"
  expect_stats client curl
  expect_stats server python3
}

register "python3 -m http.server + curl" case_python_http
