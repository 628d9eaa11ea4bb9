#!/bin/sh
# serve.sh PORT PROGRAM ARGS…: run PROGRAM in the background and return once PORT accepts connections (at most
# 10 s); the program keeps running until the activity ends.
set -e
port="$1"
shift
python3 "$@" > /golem/work/server.log 2>&1 &
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 200 ]; then
        echo "nothing listens on port $port:" >&2
        cat /golem/work/server.log >&2
        exit 1
    fi
    sleep 0.05
done
