#!/usr/bin/env bash
# A headless Chromium for the web demo's browser test (tests/test_demo_browser.py), which drives
# it through the playwright package of the test extra; playwright uses this system Chromium and
# downloads no browser of its own. Run by run_tests.sh, not by setup_env.sh, so that the main job
# never installs system packages.
#
# When no Chromium is found ($CHROMIUM, chromium, chromium-browser) and apt-get exists, installs
# Debian's `chromium` package: as root, or through sudo where sudo needs no password.
# UNISPARSE_NO_APT=1 skips the attempt. It never stops the test run: without a browser the
# browser test skips with the reason, or fails when $CI is set.
set -uo pipefail

have_chromium() {
  local c
  for c in "${CHROMIUM:-}" chromium chromium-browser; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && return 0
  done
  return 1
}

have_chromium && exit 0
why=""
if [ "${UNISPARSE_NO_APT:-0}" = "1" ]; then
  why="UNISPARSE_NO_APT=1"
elif ! command -v apt-get >/dev/null 2>&1; then
  why="no apt-get on this machine"
elif [ "$(id -u)" = "0" ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  why="not root and no password-less sudo"
fi
if [ -z "$why" ]; then
  echo "[setup] installing Chromium for the browser test (apt-get install chromium)"
  export DEBIAN_FRONTEND=noninteractive
  log="$(mktemp)"
  if "${SUDO[@]}" apt-get update -qq >"$log" 2>&1 && "${SUDO[@]}" apt-get install -y -qq chromium >>"$log" 2>&1; then
    rm -f "$log"
    have_chromium && exit 0
    why="apt-get installed chromium but no chromium command is on PATH"
  else
    tail -n 20 "$log" >&2
    why="apt-get install chromium failed (its output above)"
  fi
fi
echo "[setup] no Chromium ($why): tests/test_demo_browser.py will skip, or fail where \$CI is set." \
     "Install it with: apt-get install chromium (or set \$CHROMIUM to a Chromium binary)." >&2
exit 0
