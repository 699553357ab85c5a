#!/bin/sh
# The package's one command (start, stop, check, whoami), as AppCenter packages have one.
set -e
case "$1" in
    start) [ -f /opt/app/conf/web.env ] || /opt/app/bin/node.sh; systemctl start sbxweb ;;
    stop) systemctl stop sbxweb ;;
    check) systemctl is-active -q sbxweb ;;
    whoami) curl -sf http://metadata/self/host/ip ;;
    *) echo "usage: ctl.sh start|stop|check|whoami" >&2; exit 2 ;;
esac
