# shellcheck shell=bash
# nginx (private config, 2 workers) + curl: every file byte-exact, keep-alive, concurrency, ranges.

nginx_start() {
  local sendfile=$1
  NG_PORT=$(port)
  mkdir -p nginx/tmp
  cat >nginx/nginx.conf <<CONF
daemon off;
master_process on;
worker_processes 2;
user root;
pid $CASE_DIR/nginx/nginx.pid;
error_log $CASE_DIR/nginx-error.log info;
events { worker_connections 256; }
http {
  default_type application/octet-stream;
  access_log $CASE_DIR/nginx-access.log;
  client_body_temp_path $CASE_DIR/nginx/tmp/body;
  proxy_temp_path $CASE_DIR/nginx/tmp/proxy;
  fastcgi_temp_path $CASE_DIR/nginx/tmp/fastcgi;
  uwsgi_temp_path $CASE_DIR/nginx/tmp/uwsgi;
  scgi_temp_path $CASE_DIR/nginx/tmp/scgi;
  sendfile $sendfile;
  tcp_nopush on;
  keepalive_timeout 30;
  keepalive_requests 1000;
  server {
    listen 127.0.0.1:$NG_PORT;
    root $DATA/www;
  }
}
CONF
  start_server nginx nginx -p "$CASE_DIR/nginx" -c "$CASE_DIR/nginx/nginx.conf" -e "$CASE_DIR/nginx-error.log"
  NG_SRV=$SRV_PID
  wait_port "$NG_PORT" "$NG_SRV"
}

nginx_stop() {
  stop_server "$NG_SRV" QUIT   # graceful: workers finish and exit, then the master
  ((SRV_RC == 0)) || die "nginx exited with status $SRV_RC"
  # The one expected error: the 404 of missing.bin.
  ! grep -E '\[(emerg|alert|crit|error)\]' nginx-error.log | grep -v '/missing.bin"' || die "nginx logged errors"
}

# curl_get NAME URL-PATH OUT [CURL-ARGS...]: one download; prints the HTTP status.
curl_get() {
  local path=$1 out=$2; shift 2
  cl client curl -sS --max-time 50 -o "$out" -w '%{http_code}' "$@" "http://127.0.0.1:$NG_PORT/$path"
}

nginx_case() {
  local sendfile=$1 f b code
  nginx_start "$sendfile"
  # 1. Every file, one curl each.
  get_each_file "$NG_PORT"
  # 2. Keep-alive: all files through one curl, one connection.
  local args=() names=()
  for f in "$DATA"/www/*.bin; do
    b=$(basename "$f"); names+=("$b")
    args+=(-o "got/ka-$b" "http://127.0.0.1:$NG_PORT/$b")
  done
  cl client curl -sS --max-time 50 -w '%{http_code} %{num_connects}\n' "${args[@]}" >ka.out ||
    die "keep-alive curl exited with status $?"
  local codes conns
  codes=$(awk '{print $1}' ka.out | sort -u | tr '\n' ' ')
  conns=$(awk '{s += $2} END {print s}' ka.out)
  [[ $codes == "200 " && $(wc -l <ka.out) == "${#names[@]}" ]] || die "keep-alive statuses: $(tr '\n' ' ' <ka.out)"
  [[ $conns == 1 ]] || die "keep-alive: $conns connections for ${#names[@]} URLs (expected 1)"
  for b in "${names[@]}"; do same_file "keep-alive GET /$b" "got/ka-$b" "$DATA/www/$b"; done
  sig "keep-alive: ${#names[@]} URLs, 1 connection, all 200 and byte-exact"
  # 3. Concurrency: 4 curls of the 10 MB file at once.
  local pids=() i rc
  for i in 1 2 3 4; do
    curl_get big.bin "got/par$i" >"par$i.code" 2>"par$i.err" &
    pids+=($!)
  done
  for i in 1 2 3 4; do
    rc=0; wait "${pids[$((i - 1))]}" || rc=$?
    ((rc == 0)) || die "concurrent curl $i exited with status $rc: $(cat "par$i.err")"
    [[ $(cat "par$i.code") == 200 ]] || die "concurrent curl $i: HTTP $(cat "par$i.code")"
    same_file "concurrent GET /big.bin #$i" "got/par$i" "$DATA/www/big.bin"
  done
  sig "concurrent: 4 x GET /big.bin 200 byte-exact"
  # 4. A byte range across a page boundary, and a missing file.
  code=$(curl_get big.bin got/range -r 4000-1052000) || die "range curl exited with status $?"
  [[ $code == 206 ]] || die "range GET: HTTP $code"
  head -c 1052001 "$DATA/www/big.bin" | tail -c 1048001 >want-range
  same_file "range GET" got/range want-range
  sig "range 4000-1052000: 206 byte-exact"
  code=$(curl_get missing.bin got/missing) || die "curl of a missing file exited with status $?"
  [[ $code == 404 ]] || die "GET /missing.bin: HTTP $code"
  sig "missing: 404"
  nginx_stop
  sig "exit nginx 0"
  expect_stats client curl
  if [[ $sendfile == on ]]; then
    expect_stats server nginx --need-calls sendfile,sendfile64
  else
    expect_stats server nginx --forbid-calls sendfile,sendfile64
  fi
}

case_nginx_sendfile() { nginx_case on; }
case_nginx_nosendfile() { nginx_case off; }

register "nginx sendfile on + curl" case_nginx_sendfile
register "nginx sendfile off + curl" case_nginx_nosendfile
