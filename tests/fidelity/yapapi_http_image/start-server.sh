#!/bin/sh
# Start Python's HTTP server on port 80 in the background, serving /golem/www, and return once it accepts
# connections (at most 10 s): the stand-in for the yapapi example's nginx.
set -e
cd /golem/www
python3 -m http.server 80 --directory /golem/www > /golem/www/.server.log 2>&1 &
i=0
until python3 -c 'import socket; socket.create_connection(("127.0.0.1", 80), 1).close()' 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 200 ]; then
        echo "the HTTP server did not start listening on port 80:" >&2
        cat /golem/www/.server.log >&2
        exit 1
    fi
    sleep 0.05
done
