#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: starts what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/test-services.sh)"
export JIT_TEST_PG_URL JIT_TEST_MOTO
cargo test --workspace --locked "$@"
