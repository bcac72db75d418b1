#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run):
#   bash scripts/test.sh [extra pytest args]
# 1. installs the Debian packages whose binaries the tests need, when missing;
# 2. creates .venv (Python 3.11) when missing and installs the project into it;
# 3. runs ruff, mypy and pytest: the in-process tests on two processes (pytest-xdist: they are
#    CPU-bound and share nothing), then the tests marked slow (real broker, workers, browsers,
#    Prometheus) on two processes too: the CPU-bound ones (the demo, the log replays, the
#    benchmark smoke test: xdist_group "cpu") one after another on one of them, the rest (fault
#    tests, which mostly wait on timeouts, rebalances and frozen brokers) beside them. Every
#    test picks free ports and its own directories, so two can run at once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests need, as "binary:package" (the package is installed
# only when the binary is not on PATH):
#   prometheus (promtool, prometheus), prometheus-alertmanager (amtool), chromium + chromium-driver (wall test),
#   openssl (throwaway CA and certificates for the Kafka TLS test)
APT_NEEDS="promtool:prometheus amtool:prometheus-alertmanager chromium:chromium chromedriver:chromium-driver openssl:openssl"

log() { printf '==> %s\n' "$*" >&2; }

install_debian_packages() {
    local entry binary package missing=()
    for entry in $APT_NEEDS; do
        binary="${entry%%:*}"
        package="${entry#*:}"
        if ! command -v "$binary" >/dev/null 2>&1; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            log "not root and no sudo: cannot install ${missing[*]} (tests needing them may fail)"
            return 0
        fi
    fi
    log "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        local py
        py="$(command -v python3.11 || command -v python3)"
        log "creating .venv with $py"
        "$py" -m venv .venv
    fi
    # shellcheck disable=SC1091
    . .venv/bin/activate
    python - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f".venv runs Python {sys.version.split()[0]}; partnerpulse needs 3.11 "
             "(remove .venv and make python3.11 available)")
PY
    # Reinstall only when the project metadata changed (pip's build step for the
    # editable install costs seconds even when everything is already there).
    local stamp=.venv/.partnerpulse-installed want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
        || ! python -c 'import streams, pytest, ruff, mypy, rocksdict, quixstreams' >/dev/null 2>&1; then
        log "pip install -e '.[test,rocksdb,bench]'"
        python -m pip install --quiet --disable-pip-version-check -e '.[test,rocksdb,bench]'
        printf '%s\n' "$want" >"$stamp"
    fi
}

install_debian_packages
ensure_venv

lint_paths=()
for dir in streams tests bench; do
    [ -d "$dir" ] && lint_paths+=("$dir")
done

log "ruff check ${lint_paths[*]}"
ruff check "${lint_paths[@]}"
# E304, a blank line after a decorator, is a preview rule (and preview mode changes stable rules
# too, so only this one): a helper once slipped in between `@pytest.fixture` and the fixture it
# decorated, and the fault tests silently shared one broker.
ruff check --preview --select E304 "${lint_paths[@]}"

log "mypy"
mypy

if [ "$#" -gt 0 ]; then  # a chosen selection: as asked, in one process
    log "pytest -q --durations=15 $*"
    exec python -m pytest -q --durations=15 "$@"
fi
log "pytest -q -m 'not slow' -n 2"
python -m pytest -q --durations=10 -m "not slow" -n 2
log "pytest -q -m slow -n 2 --dist loadgroup"
exec python -m pytest -q --durations=15 -m slow -n 2 --dist loadgroup
