#!/usr/bin/env bash
# Run the multi-worker exactness tests N times each (default 10) and print how many passed.
#
#   tests/integration/loop_multiworker.sh [N]        (TESTS="three_workers" for one of them)
#
# Each run is a fresh embedded broker and fresh workers (tests/integration/test_exactness.py,
# test_multiworker.py and test_scale_out.py):
#   sigkill            one worker killed -9 mid-stream and restarted
#   two_workers        two workers share the group, one is killed -9, the other carries on
#   three_workers      three workers, one killed -9 and restarted, one leaving cleanly
#   twelve_partitions  12 partitions: three workers, one killed -9 and restarted, one leaving
#                      cleanly, a fourth joining; the ClickHouse stores checked too
#                      (not "scale_out": -k matches the module's name too, which would run its
#                      other test as well)
# Every run must reach the batch recount exactly. The log of each failed run is kept (its path
# is printed). Exit status: 0 when every run passed, 1 otherwise, 2 for an unknown name in TESTS.
set -u
cd "$(dirname "$0")/../.."
runs="${1:-10}"
python="${PYTHON:-.venv/bin/python}"
logs="$(mktemp -d -t cci-multiworker-XXXXXX)"
known="sigkill two_workers three_workers twelve_partitions"
for test in ${TESTS:-$known}; do
    case " $known " in
        *" $test "*) ;;
        *) echo "TESTS: unknown test '$test'; choose from: $known" >&2; exit 2 ;;
    esac
done
failed=0
for test in ${TESTS:-$known}; do
    passed=0
    for run in $(seq 1 "$runs"); do
        log="$logs/$test-$run.log"
        started=$SECONDS
        if "$python" -m pytest -q -x -p no:cacheprovider tests/integration/test_exactness.py \
            tests/integration/test_multiworker.py tests/integration/test_scale_out.py \
            -m "loop or not loop" -k "$test" --basetemp="$logs/$test-$run" >"$log" 2>&1; then
            passed=$((passed + 1))
            echo "$test run $run: passed in $((SECONDS - started)) s"
            rm -rf "$log" "$logs/$test-$run"
        else
            failed=1
            echo "$test run $run: FAILED in $((SECONDS - started)) s (log: $log)"
        fi
    done
    echo "$test: $passed/$runs passed"
done
exit "$failed"
