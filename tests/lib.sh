# Shared helpers for the shell test suites: counting, assertions, temp dirs.
# Source it, set SUITE, call `check NAME CMD...` or `pass NAME` / `fail NAME WHY`, end with `summary`.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SDX=$ROOT/build/bin/sdx
LIB=$ROOT/build/lib/libsdx.so
PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }

# check NAME CMD...: passes when CMD exits 0.
check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$out" | tail -n 15)"; fi
}

summary() {
  echo "${SUITE}: ${PASSED} passed, ${FAILED} failed"
  [[ $FAILED == 0 && $PASSED -gt 0 ]]
}

# port: a free TCP port below the ephemeral range (no client socket can be bound to it), not handed
# out before in this run (the caller's $tmp/ports remembers them).
port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    grep -qx "$p" "$tmp/ports" 2>/dev/null && continue
    [[ -z $(ss -HtanO "( sport = :$p or dport = :$p )" 2>/dev/null) ]] || continue
    echo "$p" >>"$tmp/ports"
    echo "$p"
    return 0
  done
  echo 0
}

# wait_listen PORT [TRIES]: until something listens on PORT, polling every 10 ms at most TRIES
# times (default 500: 5 s).  1 when nothing did.
wait_listen() {
  local p=$1 tries=${2:-500} i
  for ((i = 0; i < tries; i++)); do
    [[ -n $(ss -ltnH "sport = :$p" 2>/dev/null) ]] && return 0
    sleep 0.01
  done
  return 1
}

# nginx_conf DIR PORT SENDFILE KEEPALIVE_REQUESTS: a private nginx configuration in DIR/nginx.conf
# (2 workers, no access log, every temp path and the pid file under DIR, files served from DIR/www).
nginx_conf() {
  local d=$1 p=$2 sendfile=$3 requests=$4
  mkdir -p "$d/www" "$d/tmp"
  cat >"$d/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 2;
user root;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  sendfile $sendfile;
  keepalive_timeout 60;
  keepalive_requests $requests;
  server { listen 127.0.0.1:$p; root $d/www; }
}
CONF
}
