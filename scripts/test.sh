#!/usr/bin/env bash
# Runs every test project of BatchRunner.sln and ends with one summary line:
#
#   N passed, N failed[, N skipped]
#
#   scripts/test.sh [extra dotnet test args...]   e.g. scripts/test.sh --filter FullyQualifiedName~Oci
#
# Installs missing system packages first (scripts/install-deps.sh --test). TRX results go
# to artifacts/test-results/. A single test hanging for 15 minutes is killed and reported
# (--blame-hang-timeout; override with BATCHRUNNER_TEST_HANG_TIMEOUT=5m) so a hang cannot
# eat the whole CI budget.
# Exit status: non-zero when dotnet test failed, any test failed, or no test ran.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

bash ./scripts/install-deps.sh --test

results="$root/artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"

# The local dotnet tools (.config/dotnet-tools.json): kiota, with which the OpenAPI tests generate a client.
dotnet tool restore

set +e
# Build once (in parallel), then run the test assemblies one after another (-m:1): several of them
# drive host-wide state (bridges and iptables rules through CNI, cgroups, runc), and two at once on
# 2 cores also made their timing flaky.
dotnet build BatchRunner.sln -c Release -nologo -v quiet
build_rc=$?
if [ "$build_rc" -ne 0 ]; then
    echo "test: the build failed (exit $build_rc)" >&2
fi
dotnet test BatchRunner.sln -c Release --no-build -m:1 \
    --results-directory "$results" \
    --logger "trx" \
    --logger "console;verbosity=normal" \
    --blame-hang-timeout "${BATCHRUNNER_TEST_HANG_TIMEOUT:-15m}" \
    --blame-hang-dump-type none \
    "$@"
test_rc=$?
[ "$build_rc" -eq 0 ] || test_rc=$build_rc
set -e

# failures_digest DIR: each failed test of DIR's TRX files, with the first lines of its message.
failures_digest() {
    local trx r name msg
    echo
    echo "test: failed tests:"
    while IFS= read -r -d '' trx; do
        # One line per <UnitTestResult>, its own newlines as \001.
        tr '\n\r' '\001\001' <"$trx" | sed 's/<UnitTestResult /\n<UnitTestResult /g' |
            { grep '^<UnitTestResult [^>]*outcome="\(Failed\|Error\|Timeout\|Aborted\)"' || true; } |
            while IFS= read -r r; do
                r="${r%%</UnitTestResult>*}"
                name="$(sed -n 's/.*testName="\([^"]*\)".*/\1/p' <<<"${r%%>*}")"
                msg="$(sed -n 's/.*<Message>\([^<]*\)<\/Message>.*/\1/p' <<<"$r" | tr '\001' '\n' | head -n 8)"
                echo "  FAILED ${name:-?}"
                [ -z "$msg" ] || sed 's/^/      /' <<<"$msg"
            done
    done < <(find "$1" -name '*.trx' -type f -print0)
}

# Sum the <Counters .../> element of every TRX file (one per test assembly).
num() { # num ATTR ELEMENT -> the attribute's integer value, 0 when absent
    local v
    v="$(sed -n "s/.*[[:space:]]$1=\"\([0-9][0-9]*\)\".*/\1/p" <<<"$2" | head -n1)"
    echo "${v:-0}"
}
total=0 passed=0 failed=0 skipped=0 files=0
while IFS= read -r -d '' trx; do
    counters="$(tr '\n\r' '  ' <"$trx" | grep -o '<Counters [^>]*>' | head -n1 || true)"
    if [ -z "$counters" ]; then
        echo "test: no <Counters> element in $trx" >&2
        continue
    fi
    files=$((files + 1))
    total=$((total + $(num total "$counters")))
    passed=$((passed + $(num passed "$counters")))
    for a in failed error timeout aborted; do
        failed=$((failed + $(num "$a" "$counters")))
    done
    # Skipped tests are results with outcome NotExecuted: counted in total, not in executed.
    t="$(num total "$counters")" e="$(num executed "$counters")" n="$(num notExecuted "$counters")"
    s=$((t - e)); [ "$s" -ge "$n" ] || s=$n
    skipped=$((skipped + s))
done < <(find "$results" -name '*.trx' -type f -print0)

status=0
if [ "$test_rc" -ne 0 ]; then
    echo "test: dotnet test exited with $test_rc (build error, crash, hang or failing tests; see above)" >&2
    status=1
fi
if [ "$files" -eq 0 ] || [ "$total" -eq 0 ]; then
    echo "test: no test ran ($files TRX files in artifacts/test-results)" >&2
    status=1
fi
[ "$failed" -eq 0 ] || status=1
# A build error, a crashed or hung test host, or an empty run has no failing test
# result of its own: count it as one failure so the summary line agrees with the exit status.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "test: counting the failed run as 1 failure" >&2
    failed=1
fi

# CI keeps only the tail of the output: name each failed test and its message's first lines there.
if [ "$failed" -gt 0 ]; then
    failures_digest "$results"
fi

summary="$passed passed, $failed failed"
[ "$skipped" -eq 0 ] || summary="$summary, $skipped skipped"
echo
echo "$summary"
exit "$status"
