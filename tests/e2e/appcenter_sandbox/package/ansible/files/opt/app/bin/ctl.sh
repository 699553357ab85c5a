#!/bin/sh
# The package's one command (start, stop, check, whoami), as AppCenter packages have one.
set -e
case "$1" in
    start)
        [ -f /opt/app/conf/web.env ] || /opt/app/bin/node.sh
        if [ "$(systemctl is-enabled sbxfiles)" = masked ]; then  # first start: the node's set-up
            systemctl unmask sbxfiles  # the image masks it until then, as the packages' builds do
            mkdir -p /opt/app/www/logs
            echo "a node log" > /opt/app/www/logs/node.log
            chgrp -R sbxgrp /opt/app/www && chmod 750 /opt/app/www /opt/app/www/logs
            chmod 640 /opt/app/www/logs/node.log  # readable by the viewer through its group only
        fi
        systemctl start sbxweb sbxfiles
        . /opt/app/conf/web.env
        tries=0  # started means serving, as AppCenter's appctl checks a service's endpoint
        until curl -sf -o /dev/null "http://$MY_IP:8080/" \
            && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$MY_IP:8081/")" = 401 ]; do
            tries=$((tries + 1)); [ "$tries" -lt 100 ] || exit 1; sleep 0.2
        done ;;
    stop) systemctl stop sbxfiles sbxweb ;;
    check) systemctl is-active -q sbxweb && systemctl is-active -q sbxfiles ;;
    whoami) curl -sf http://metadata/self/host/ip ;;
    *) echo "usage: ctl.sh start|stop|check|whoami" >&2; exit 2 ;;
esac
