# shellcheck shell=bash
# socat: a one-shot TCP listener writing what it receives to a file, and an echo server (EXEC:cat).

case_socat_file() {
  local p f=$DATA/www/big.bin
  p=$(port)
  start_server socat-server socat -u "TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr" "CREATE:$CASE_DIR/received.bin"
  local srv=$SRV_PID
  wait_port "$p" "$srv"
  cl client socat -u "OPEN:$f,rdonly" "TCP:127.0.0.1:$p" 2>client.err || die "socat client exited with status $?"
  stop_server "$srv" none   # one connection, then it exits
  ((SRV_RC == 0)) || die "socat listener exited with status $SRV_RC"
  same_file "socat to file" received.bin "$f"
  sig "file $(stat -c %s "$f") bytes: byte-exact, exit client 0 server 0"
  expect_stats client socat
  expect_stats server socat
}

case_socat_echo() {
  local p f=$DATA/www/big.bin
  p=$(port)
  # -t: after one side's EOF keep moving the other direction (until its EOF) for up to 30 s.
  # Not the PIPE address: socat writes 8 KiB blocks into its own pipe with a blocking write and
  # deadlocks itself once the pipe is nearly full (plain socat, seen here). cat is another process.
  start_server socat-echo socat -t 30 "TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr" EXEC:/bin/cat
  local srv=$SRV_PID
  wait_port "$p" "$srv"
  cl client socat -t 30 - "TCP:127.0.0.1:$p" <"$f" >echoed.bin 2>client.err || die "socat client exited with status $?"
  stop_server "$srv" none
  ((SRV_RC == 0)) || die "socat echo server exited with status $SRV_RC"
  same_file "socat echo" echoed.bin "$f"
  sig "echo $(stat -c %s "$f") bytes: byte-exact, exit client 0 server 0"
  expect_stats client socat
  expect_stats server socat
}

register "socat TCP to file" case_socat_file
register "socat echo (EXEC:cat)" case_socat_echo
