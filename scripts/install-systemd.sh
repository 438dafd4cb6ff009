#!/usr/bin/env bash
# Installs the edge agent as a systemd service.
#
#   sudo scripts/install-systemd.sh [--prefix DIR] [--bin-dir DIR] [--no-start]
#   scripts/install-systemd.sh --root DIR      # stage every file under DIR only
#
# Run it from a checkout where `npm ci` has run. It builds dist/, copies the
# agent to PREFIX (default /opt/edge-agent) with production dependencies,
# puts the `edge-agent` command in BIN-DIR (default /usr/local/bin: a small
# script that runs PREFIX's agent with the Node.js the service uses; without
# --config it reads /etc/edge-agent/edge-agent.yaml), creates the system user
# `edge-agent`, installs /etc/edge-agent/edge-agent.yaml (only if it does not
# exist yet: your edits survive a reinstall) and the unit
# /etc/systemd/system/edge-agent.service, then enables and starts it.
# With --root DIR nothing outside DIR is touched: no user is created and
# systemctl is not called (for packaging and for tests).
set -euo pipefail

prefix=/opt/edge-agent
bin_dir=/usr/local/bin
root=
start=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --no-start) start=no; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-systemd: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
node_bin=$(command -v node || true)
[ -n "$node_bin" ] || { echo "install-systemd: node is not on PATH; install Node.js 20 or newer first" >&2; exit 69; }
major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "install-systemd: Node.js $major is too old; 20 or newer is needed" >&2; exit 69; }
case "$node_bin" in
  /root/*|/home/*|/run/user/*)
    echo "install-systemd: node is at $node_bin, under a home directory that the unit's ProtectHome=yes hides from the service;" >&2
    echo "  install Node.js system-wide (for example /usr/bin/node or /usr/local/bin/node) and run this again" >&2
    exit 69 ;;
esac
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-systemd: run as root (or stage files with --root DIR)" >&2; exit 77
fi
[ -d "$repo/node_modules" ] || { echo "install-systemd: run 'npm ci' in $repo first" >&2; exit 69; }

echo "building dist/"
(cd "$repo" && npm run build --silent)

dest="$root$prefix"
echo "installing the agent to $dest"
mkdir -p "$dest"
rm -rf "$dest/dist" "$dest/config" "$dest/docs" "$dest/node_modules"
cp -R "$repo/dist" "$repo/config" "$repo/docs" "$repo/node_modules" "$repo/package.json" "$repo/package-lock.json" "$repo/README.md" "$dest/"
# Production dependencies only. The native modules (better-sqlite3,
# unix-dgram) were built by `npm ci` for this machine's Node.js, so they are
# copied rather than built again.
(cd "$dest" && npm prune --omit=dev --no-audit --no-fund --silent)

# The command on PATH. A script rather than a symlink to main.js: it names
# the Node.js the unit runs (sudo's secure_path may not reach it) and needs
# no executable bit on dist/. A file there that this script did not write is
# left alone.
command="$root$bin_dir/edge-agent"
marker="# edge-agent command, written by scripts/install-systemd.sh"
mkdir -p "$root$bin_dir"
if [ -e "$command" ] && ! grep -qxF "$marker" "$command" 2>/dev/null; then
  echo "install-systemd: $command exists and was not written by this script: left as it is" >&2
  echo "  (run the agent's commands as $node_bin $prefix/dist/agent/main.js ...)" >&2
else
  printf '#!/bin/sh\n%s\n# The agent in %s, run by the Node.js its service uses.\nexec '"'%s' '%s/dist/agent/main.js'"' "$@"\n' \
    "$marker" "$prefix" "$node_bin" "$prefix" > "$command.tmp"
  chmod 0755 "$command.tmp"
  mv -f "$command.tmp" "$command"
  echo "wrote $command"
fi

conf_dir="$root/etc/edge-agent"
mkdir -p "$conf_dir"
if [ -e "$conf_dir/edge-agent.yaml" ]; then
  echo "keeping the existing $conf_dir/edge-agent.yaml"
else
  sed -e 's#^  dataDir: ./data#  dataDir: /var/lib/edge-agent#' "$repo/config/edge-agent.example.yaml" > "$conf_dir/edge-agent.yaml"
  chmod 0640 "$conf_dir/edge-agent.yaml"
  echo "wrote $conf_dir/edge-agent.yaml (edit it, then: systemctl reload edge-agent)"
fi

unit_dir="$root/etc/systemd/system"
mkdir -p "$unit_dir"
sed -e "s#@NODE@#$node_bin#g" -e "s#@PREFIX@#$prefix#g" "$repo/config/edge-agent.service" > "$unit_dir/edge-agent.service"
chmod 0644 "$unit_dir/edge-agent.service"
echo "wrote $unit_dir/edge-agent.service"

if [ -n "$root" ]; then
  echo "staged under $root; no user created, systemctl not called"
  exit 0
fi

if ! id edge-agent >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/edge-agent --no-create-home --shell /usr/sbin/nologin edge-agent
  echo "created system user edge-agent"
fi
chgrp edge-agent "$conf_dir/edge-agent.yaml"
"$node_bin" "$prefix/dist/agent/main.js" config check --config "$conf_dir/edge-agent.yaml" >/dev/null
systemctl daemon-reload
if [ "$start" = yes ]; then
  systemctl enable --now edge-agent.service
  echo "started: systemctl status edge-agent; journalctl -u edge-agent -f"
else
  systemctl enable edge-agent.service
  echo "enabled; start it with: systemctl start edge-agent"
fi
