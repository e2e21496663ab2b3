#!/usr/bin/env bash
# Install everything edgekit needs on the host: Debian packages and the Python package with all extras.
#   scripts/setup.sh            host + device + deploy + dev tools
#   EDGEKIT_SKIP_APT=1 ...      skip the Debian packages (when they are already there)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# dataset-fashion-mnist: the official IDX files, used when tfds cannot download (no network).
# openssh-server: the deploy tests run real sshd "Pis" on 127.0.0.1.
# systemd: systemd-analyze verifies the device's unit file (systemd need not run).
# debootstrap, qemu-user-static, binfmt-support: the emulated arm64 Raspberry Pi OS target (tests -m arm64).
# qemu-system-arm, qemu-utils, e2fsprogs: the whole emulated Pi (tests -m vm): qemu-system-aarch64 boots a
#   debootstrap-built ext4 image (mke2fs -d) on a qcow2 overlay (qemu-img).
# chromium: the browser the page tests drive through Playwright (never `playwright install`).
# prometheus: the real Prometheus (and promtool) the metrics and alert-rule tests run.
APT_PACKAGES=(dataset-fashion-mnist openssh-server systemd debootstrap qemu-user-static binfmt-support qemu-system-arm qemu-utils e2fsprogs chromium prometheus)

if [ -z "${EDGEKIT_SKIP_APT:-}" ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
echo "setup: installing edgekit with extras host, device, deploy, dev ($("$PY" --version))"
"$PY" -m pip install -q --disable-pip-version-check -e ".[host,device,deploy,dev]"
echo "setup: done"
