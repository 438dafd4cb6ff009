#!/usr/bin/env bash
# Finds the system programs the test suite needs and, when run as root on a
# Debian-like system, installs the missing ones. Called by `npm test`
# (pretest). Fails with a message naming what is missing otherwise.
#
# program          Debian package     used for
# python3          python3            a stand-in for systemd's notification socket
# systemd-analyze  systemd            checking the shipped unit file
# openssl          openssl            the independent check of every certificate
# mosquitto        mosquitto          a real MQTT broker
# mosquitto_pub    mosquitto-clients  real MQTT clients (and mosquitto_sub)
# stdbuf           coreutils          line-buffered output of mosquitto_sub
# ip               iproute2           a network namespace of its own for the mDNS test
# samba            samba              a real Active Directory domain controller (/usr/sbin/samba)
# samba-tool       samba-common-bin   provisioning the test domain, its users and groups (a dependency of samba)
# winbindd         samba-ad-dc        the DC's package set (it brings winbind and samba-dsdb-modules, the AD database modules)
# provision.ldif   samba-ad-provision the AD schema and the provisioning templates, in /usr/share/samba/setup
# ldapsearch       ldap-utils         an independent LDAP client: waiting for the DC, reading GUIDs (and ldapmodify)
# chromium         chromium           a real browser for the web console's end-to-end tests (driven by playwright-core)
# DejaVuSans.ttf   fonts-dejavu-core  a font for Chromium to draw the console's text with (/usr/share/fonts/truetype/dejavu)
set -euo pipefail

declare -A package=([python3]=python3 [systemd-analyze]=systemd [openssl]=openssl [mosquitto]=mosquitto [mosquitto_pub]=mosquitto-clients [mosquitto_sub]=mosquitto-clients [stdbuf]=coreutils [ip]=iproute2 [samba]=samba [samba-tool]=samba-common-bin [winbindd]=samba-ad-dc [/usr/share/samba/setup/provision.ldif]=samba-ad-provision [ldapsearch]=ldap-utils [ldapmodify]=ldap-utils [chromium]=chromium [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]=fonts-dejavu-core)
# Debian installs the broker (and samba, winbindd) in /usr/sbin, which is not on every PATH.
# A package without a program (samba-ad-provision, fonts-dejavu-core) is found by a file of its own, named by its absolute path.
found() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
  esac
}
missing=()
for program in "${!package[@]}"; do
  found "$program" || missing+=("$program")
done
[ ${#missing[@]} -eq 0 ] && exit 0

wanted=$(for p in "${missing[@]}"; do echo "${package[$p]}"; done | sort -u | tr '\n' ' ')
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${wanted}for: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # shellcheck disable=SC2086 # word splitting of the package list is wanted
  apt-get install -y -qq --no-install-recommends $wanted >&2
  for program in "${missing[@]}"; do
    found "$program" || { echo "test-deps: $program still missing after installing ${package[$program]}" >&2; exit 1; }
  done
  exit 0
fi
echo "test-deps: the tests need: ${missing[*]}. Install them (Debian: apt-get install -y ${wanted}) and run npm test again." >&2
exit 1
