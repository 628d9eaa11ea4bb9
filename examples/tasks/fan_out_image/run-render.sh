#!/bin/sh
# As the Blender image's run-blender.sh: render what /golem/work/params.json asks for.
cd /golem/work && exec python3 /golem/entrypoints/render.py /golem/work/params.json
