#!/bin/sh
# Entry point of the Tidelog image (Dockerfile). With no arguments, or options only, it runs
# `tidelog serve` with the image's defaults; `serve ...` the same; any other command runs as
# given (`tidelog topics list -b broker-1:9092`, `sh`).
#
# Defaults, each overridable by the environment:
#   TIDELOG_DATA_DIR=/var/lib/tidelog  the volume
#   TIDELOG_HOST=0.0.0.0               Kafka binds every interface of the container
#   TIDELOG_HTTP_HOST=0.0.0.0          so does HTTP (console, API, /metrics, /ready): the API has no
#                                      authentication yet, publish it only where it is trusted
#                                      (docker run -p 127.0.0.1:9644:9644)
# Every broker setting is a TIDELOG_* variable too: TIDELOG_CLUSTER (etcd://...), TIDELOG_NODE_ID,
# TIDELOG_ADVERTISED_LISTENERS, TIDELOG_NUM_PARTITIONS, ... (docs/settings.md).
set -eu
export TIDELOG_DATA_DIR="${TIDELOG_DATA_DIR:-/var/lib/tidelog}"
export TIDELOG_HOST="${TIDELOG_HOST:-0.0.0.0}"
export TIDELOG_HTTP_HOST="${TIDELOG_HTTP_HOST:-0.0.0.0}"
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- tidelog serve "$@"
elif [ "$1" = serve ]; then
    set -- tidelog "$@"
fi
exec "$@"
