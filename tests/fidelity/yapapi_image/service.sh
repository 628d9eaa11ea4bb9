#!/bin/sh
# The service of the yapapi fidelity test: a log in /golem/out that grows by a line per observation.
set -e
LOG=/golem/out/service.log
case "$1" in
    --start) { echo "started"; cat /golem/in/greeting.txt; } > "$LOG" ;;
    --observe) echo "observation $2" >> "$LOG" ;;
    --stats) echo "{\"observations\": $(grep -c '^observation' "$LOG")}" ;;
    --stop) echo "stopped" >> "$LOG" ;;
    *) echo "usage: $0 --start | --observe N | --stats | --stop" >&2; exit 2 ;;
esac
