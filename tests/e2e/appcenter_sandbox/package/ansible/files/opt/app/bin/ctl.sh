#!/bin/sh
# The package's one command (start, stop, check, whoami), as AppCenter packages have one.
set -e
case "$1" in
    start)
        [ -f /opt/app/conf/web.env ] || /opt/app/bin/node.sh
        systemctl start sbxweb
        . /opt/app/conf/web.env
        tries=0  # started means serving, as AppCenter's appctl checks a service's endpoint
        until curl -sf -o /dev/null "http://$MY_IP:8080/"; do
            tries=$((tries + 1)); [ "$tries" -lt 100 ] || exit 1; sleep 0.2
        done ;;
    stop) systemctl stop sbxweb ;;
    check) systemctl is-active -q sbxweb ;;
    whoami) curl -sf http://metadata/self/host/ip ;;
    *) echo "usage: ctl.sh start|stop|check|whoami" >&2; exit 2 ;;
esac
