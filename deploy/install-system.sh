#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages CardBus needs, only those missing (safe to re-run).
#   Java 17+ and Maven (the Kafka broker, fetched from Maven Central), a JDK's javac (the jPOS
#   ISO 8583 bank host is compiled from deploy/iso-host), pcscd + vpcd + pcsc-tools
#   (real PC/SC with virtual cards), swig + libpcsclite-dev + gcc (pyscard builds from source),
#   kcat (an independent Kafka client for checking what is on a topic).
set -euo pipefail
packages=(openjdk-17-jre-headless openjdk-17-jdk-headless maven pcscd libpcsclite-dev pcsc-tools swig vsmartcard-vpcd
          kcat gcc python3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# A JDK/JRE of 17 or newer that is already there (e.g. a Temurin JDK) is fine.
if command -v java >/dev/null 2>&1; then
  major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}')
  if [ "${major:-0}" -ge 17 ]; then
    missing=("${missing[@]/openjdk-17-jre-headless}")
  fi
fi
command -v javac >/dev/null 2>&1 && missing=("${missing[@]/openjdk-17-jdk-headless}")
command -v mvn >/dev/null 2>&1 && missing=("${missing[@]/maven}")
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  && missing=("${missing[@]/python3-dev}")
todo=()
for p in "${missing[@]}"; do [ -n "$p" ] && todo+=("$p"); done
if [ ${#todo[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "system packages: installing ${todo[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${todo[@]}" >/dev/null
# Debian starts pcscd through systemd socket activation where systemd runs; CardBus runs its own
# pcscd with its own reader config (cardbus pcscd start), so a packaged one must not hold the socket.
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
  $SUDO systemctl stop pcscd.socket pcscd.service >/dev/null 2>&1 || true
fi
echo "system packages: done"
