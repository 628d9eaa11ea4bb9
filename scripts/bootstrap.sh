# Sourced by scripts/main and scripts/test: installs what the project needs, idempotently.
# - a virtual environment in .venv with golem-api and its test tools (reinstalled when pyproject.toml changes)
# - bubblewrap, squashfs-tools, mmdebstrap and uidmap: the local network's sandbox and images (apt-get; asks for root)
# - with GOLEM_API_WITH_REALSTACK=1 (scripts/test): Node.js/npm (apt-get where missing) and, in .npm-tools/, the npm
#   packages of the real-stack test: anvil (a local chain) and solc (compiles the test token)
# - with GOLEM_API_WITH_ENGINES=1 (scripts/test): podman, runc and docker.io (apt-get where missing), so that the
#   container runtime's tests run on both engines (a private dockerd of the test session; podman with runc)
# - with GOLEM_API_WITH_CLIENTS=1 (scripts/test): the other SDKs the local node is tested with, pinned: golem-js and
#   its TaskExecutor in .npm-clients/, golem-core in .venv-golem-core (its pins conflict with ours)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "golem-api needs Python 3.10 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
    echo "Install one, or point PYTHON= at it." >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.golem-api-installed"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing golem-api and its test tools into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c 'import golem_api, aiohttp, attrs, statemachine, rich' >/dev/null
    echo "$want" > "$stamp"
fi

# yapapi 0.13.1, unmodified, in a virtual environment of its own (its pins conflict with ours): the test suite
# runs it against the local node as an independent client (scripts/test sets GOLEM_API_WITH_YAPAPI=1).
if [ "${GOLEM_API_WITH_YAPAPI:-0}" = "1" ]; then
    ystamp=".venv-yapapi/.installed"
    if [ ! -f "$ystamp" ] || [ "$(cat "$ystamp")" != "yapapi==0.13.1" ]; then
        echo "==> installing yapapi 0.13.1 into .venv-yapapi (test-only, an independent client)"
        [ -x .venv-yapapi/bin/python ] || "$PYTHON" -m venv .venv-yapapi
        .venv-yapapi/bin/python -m pip install --quiet --disable-pip-version-check 'yapapi==0.13.1' 2>&1 | grep -v "^WARNING: Location" || true
        .venv-yapapi/bin/python -c 'import yapapi, ya_market' >/dev/null
        echo "yapapi==0.13.1" > "$ystamp"
    fi
fi

# The real stack, end to end (tests/fidelity/test_real_stack.py): a local chain (anvil, from npm) and the Solidity
# compiler (solcjs, npm `solc`), pinned, in .npm-tools/ (gitignored); the stamp holds the pins it was installed for.
if [ "${GOLEM_API_WITH_REALSTACK:-0}" = "1" ]; then
    npm_pins="@foundry-rs/anvil-linux-amd64@1.7.1 solc@0.8.37"
    nstamp=".npm-tools/.installed"
    if [ ! -f "$nstamp" ] || [ "$(cat "$nstamp")" != "$npm_pins" ]; then
        if ! command -v npm >/dev/null 2>&1; then
            if command -v apt-get >/dev/null 2>&1; then
                SUDO=""
                [ "$(id -u)" -eq 0 ] || SUDO="sudo"
                echo "==> installing Node.js and npm (the real-stack test's chain and compiler come from npm)"
                $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq nodejs npm >/dev/null
            else
                echo "error: npm is missing and apt-get is not available; install Node.js and npm" >&2
                exit 1
            fi
        fi
        echo "==> installing $npm_pins into .npm-tools (test-only: the real stack's chain and compiler)"
        mkdir -p .npm-tools
        # shellcheck disable=SC2086
        npm install --prefix "$ROOT/.npm-tools" --no-audit --no-fund --no-save --loglevel=error $npm_pins >/dev/null
        .npm-tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil --version >/dev/null
        .npm-tools/node_modules/.bin/solcjs --version >/dev/null
        echo "$npm_pins" > "$nstamp"
    fi
fi

# Other requestor SDKs, unmodified, as clients of the local node (tests/fidelity/test_golem_js.py and
# test_golem_core.py): golem-js with its TaskExecutor from npm in .npm-clients/, golem-core from PyPI in a virtual
# environment of its own (it pins ya-aioclient 0.6 and an old certifi). Each stamp holds the pins it was made for.
if [ "${GOLEM_API_WITH_CLIENTS:-0}" = "1" ]; then
    js_pins="@golem-sdk/golem-js@3.6.0 @golem-sdk/task-executor@2.0.1"
    jstamp=".npm-clients/.installed"
    if [ ! -f "$jstamp" ] || [ "$(cat "$jstamp")" != "$js_pins" ]; then
        if ! command -v npm >/dev/null 2>&1; then
            echo "error: npm is missing; install Node.js (20 or newer) and npm for the golem-js client tests" >&2
            exit 1
        fi
        echo "==> installing $js_pins into .npm-clients (test-only: golem-js as a client of the local node)"
        mkdir -p .npm-clients
        # shellcheck disable=SC2086
        npm install --prefix "$ROOT/.npm-clients" --no-audit --no-fund --no-save --loglevel=error $js_pins >/dev/null
        (cd .npm-clients && node -e 'require("@golem-sdk/golem-js"); require("@golem-sdk/task-executor")')
        echo "$js_pins" > "$jstamp"
    fi
    cstamp=".venv-golem-core/.installed"
    if [ ! -f "$cstamp" ] || [ "$(cat "$cstamp")" != "golem-core==0.7.8" ]; then
        echo "==> installing golem-core 0.7.8 into .venv-golem-core (test-only, an independent client)"
        [ -x .venv-golem-core/bin/python ] || "$PYTHON" -m venv .venv-golem-core
        .venv-golem-core/bin/python -m pip install --quiet --disable-pip-version-check 'golem-core==0.7.8' 2>&1 | grep -v "^WARNING: Location" || true
        .venv-golem-core/bin/python -c 'import golem.node, golem.resources' >/dev/null
        echo "golem-core==0.7.8" > "$cstamp"
    fi
fi

# System tools of the local network, from the distribution (Debian/Ubuntu: apt-get; asks for root):
# - bubblewrap: the sandbox of every activity and of every RUN step of an image build
# - squashfs-tools: mksquashfs/unsquashfs, the file system inside every GVMI image
# - mmdebstrap: the Debian root file systems that `FROM debian:*` and `FROM python:*` start from
# - uidmap: newuidmap/newgidmap, so that a non-root user's sandboxes map several ids (apt-get needs them)
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v mksquashfs >/dev/null 2>&1 || missing+=(squashfs-tools)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v newuidmap >/dev/null 2>&1 || missing+=(uidmap)
if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "==> installing ${missing[*]} (the local network's sandbox and images)"
        $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "warning: ${missing[*]} missing and apt-get is not available; install them with your package manager" >&2
    fi
fi

# The container engines of the container runtime's tests (tests/integration/test_container_runtime.py), test-only:
# - podman and runc: podman runs its containers with runc (crun fails on hybrid cgroup hierarchies)
# - docker.io: dockerd and its client; the tests start a private daemon of their own (root), none is enabled here
# Measured (2 shared cores): a minimal Debian plus these three takes 18-50 s more than without, +356 MiB on disk.
if [ "${GOLEM_API_WITH_ENGINES:-0}" = "1" ]; then
    engines=()
    command -v podman >/dev/null 2>&1 || engines+=(podman)
    command -v runc >/dev/null 2>&1 || engines+=(runc)
    command -v dockerd >/dev/null 2>&1 || engines+=(docker.io)
    if [ "${#engines[@]}" -gt 0 ]; then
        if command -v apt-get >/dev/null 2>&1; then
            SUDO=""
            [ "$(id -u)" -eq 0 ] || SUDO="sudo"
            echo "==> installing ${engines[*]} (test-only: the container runtime's engines)"
            $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends "${engines[@]}" >/dev/null
        else
            echo "warning: ${engines[*]} missing and apt-get is not available; the container runtime's tests will skip" >&2
        fi
    fi
fi
