#!/bin/sh
# Prints its arguments and a few lines slowly (for runAndStream).
echo "hello from the image: $*"
for i in 1 2 3; do echo "line $i"; echo "err $i" >&2; sleep 0.2; done
