# shellcheck shell=bash
# A private sshd + ssh: a file piped through `sha256sum` remotely, a file streamed back with `cat`,
# the remote exit status; all byte-exact.

case_ssh() {
  local p
  p=$(port)
  mkdir -p /run/sshd ssh
  ssh-keygen -q -t ed25519 -N '' -f ssh/host_ed25519_key
  ssh-keygen -q -t ed25519 -N '' -f ssh/id_ed25519
  cp ssh/id_ed25519.pub ssh/authorized_keys
  cat >ssh/sshd_config <<CONF
ListenAddress 127.0.0.1
HostKey $CASE_DIR/ssh/host_ed25519_key
PidFile $CASE_DIR/ssh/sshd.pid
AuthorizedKeysFile $CASE_DIR/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
CONF
  start_server sshd /usr/sbin/sshd -D -e -f "$CASE_DIR/ssh/sshd_config" -p "$p"
  local srv=$SRV_PID
  wait_port "$p" "$srv"
  local ssh_args=(-F /dev/null -i "$CASE_DIR/ssh/id_ed25519" -p "$p" -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=20 root@127.0.0.1)
  local f=$DATA/www/big.bin out want
  # Upload: the remote sha256sum of what we sent.
  out=$(cl client ssh "${ssh_args[@]}" sha256sum <"$f" 2>ssh-up.err) || die "ssh ... sha256sum exited with status $?"
  want=$(sha "$f")
  [[ $out == "$want  -" ]] || die "remote sha256sum '$out', want '$want  -'"
  sig "upload $(stat -c %s "$f") bytes: remote sha256 matches"
  # Download: the remote cat of the file.
  cl client ssh "${ssh_args[@]}" cat "$f" >down.bin 2>ssh-down.err </dev/null || die "ssh ... cat exited with status $?"
  same_file "ssh cat" down.bin "$f"
  sig "download $(stat -c %s "$f") bytes: byte-exact"
  # The remote exit status comes back.
  local rc=0
  cl client ssh "${ssh_args[@]}" 'exit 7' </dev/null 2>ssh-exit.err || rc=$?
  ((rc == 7)) || die "ssh 'exit 7' exited with status $rc"
  sig "remote exit status 7 passed through"
  stop_server "$srv" TERM   # sshd exits cleanly on SIGTERM
  ((SRV_RC == 0)) || die "sshd exited with status $SRV_RC"
  sig "exit sshd 0"
  expect_stats client ssh
  # The listening sshd accepts, then forks and re-executes itself (sshd -R) for each connection: the
  # re-executed children inherit the connection instead of creating a socket, so they write no stats
  # file; the listener's own file (it exits normally on SIGTERM) shows the accepts.
  expect_stats server sshd --need-calls accept,accept4 --no-data
}

register "sshd + ssh (sha256sum up, cat down)" case_ssh
