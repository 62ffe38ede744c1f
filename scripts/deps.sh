#!/usr/bin/env bash
# Install the Debian packages sdx needs to build and test.  Idempotent: installs only what is missing.
#   scripts/deps.sh           install what is missing (needs root, or sudo)
#   scripts/deps.sh --check   exit 0 when everything is present, 1 otherwise (prints what is missing)
set -euo pipefail

PACKAGES=(
  # build
  g++ make pkg-config libfmt-dev libgtest-dev
  # transports (loaded with dlopen at run time; headers for the build)
  libibverbs-dev librdmacm-dev libfabric-dev libfabric-bin
  # the real programs the tests and the demo drive
  iperf3 sockperf redis-server redis-tools nginx-light curl python3 openssh-server openssh-client socat
  postgresql-15 postgresql-client-15 wrk
  iproute2 procps psmisc man-db groff-base binutils
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done

if [[ ${1:-} == --check ]]; then
  if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
  exit 0
fi

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A package service that starts on install (nginx, redis, sshd) must not grab the ports tests use,
# and must not fail the install where no init system runs.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null && $SUDO chmod +x $policy && created_policy=1
fi
trap '[[ $created_policy == 1 ]] && $SUDO rm -f $policy' EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
