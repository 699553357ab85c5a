# zkEnv.sh for a sandboxed simulator VM: the environment Debian's zkServer.sh/zkCli.sh read,
# taken from the caller as ZooKeeper's own release does (docs/appcenter.md, "Shims").
#
# The packages start ZooKeeper from a release tree at /opt/zookeeper/current with ZOOCFGDIR,
# ZOO_LOG_DIR and friends in the unit's environment and JVM settings in $ZOOCFGDIR/java.env.
# Debian's zkEnv.sh fixes all of them to /etc/zookeeper/conf and /var/log/zookeeper, so the
# package's zoo.cfg (and its 4lw whitelist: `mntr`) would never be read. The image links
# Debian's scripts into /opt/zookeeper/current/bin beside this file; they source it from there.

ZOOCFGDIR="${ZOOCFGDIR:-/etc/zookeeper/conf}"
ZOOCFG="${ZOOCFG:-zoo.cfg}"
case "$ZOOCFG" in /*) ;; *) ZOOCFG="$ZOOCFGDIR/$ZOOCFG" ;; esac
if [ -f "$ZOOCFGDIR/zookeeper-env.sh" ]; then . "$ZOOCFGDIR/zookeeper-env.sh"; fi
if [ -f "$ZOOCFGDIR/java.env" ]; then . "$ZOOCFGDIR/java.env"; fi
ZOOMAIN=org.apache.zookeeper.server.quorum.QuorumPeerMain
ZOO_LOG_DIR="${ZOO_LOG_DIR:-/var/log/zookeeper}"
ZOO_LOG4J_PROP="${ZOO_LOG4J_PROP:-INFO,CONSOLE}"
JMXLOCALONLY="${JMXLOCALONLY:-true}"
# A JAVA_HOME naming a JDK the host lacks (the packages name 8 or 11) falls back to Debian's java.
if [ -n "$JAVA_HOME" ] && [ -x "$JAVA_HOME/bin/java" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=/usr/bin/java; fi
CLASSPATH="$ZOOCFGDIR:/usr/share/java/zookeeper.jar${CLASSPATH:+:$CLASSPATH}"
# A conf folder made for a 3.4 release configures log4j (log4j.properties), whose SLF4J binding
# such a release carries in lib/; Debian's ZooKeeper has no binding on its class path (it logs
# nowhere). Debian's log4j 1.2 binding, when installed, makes the package's logging apply.
if [ -f "$ZOOCFGDIR/log4j.properties" ] && [ -f /usr/share/java/slf4j-log4j12.jar ] \
    && [ -f /usr/share/java/log4j-1.2.jar ]; then
    CLASSPATH="$CLASSPATH:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar"
fi
if [ -n "$ZK_SERVER_HEAP" ]; then SERVER_JVMFLAGS="-Xmx${ZK_SERVER_HEAP}m $SERVER_JVMFLAGS"; fi
if [ -n "$ZK_CLIENT_HEAP" ]; then CLIENT_JVMFLAGS="-Xmx${ZK_CLIENT_HEAP}m $CLIENT_JVMFLAGS"; fi
export ZOOCFGDIR ZOOCFG ZOO_LOG_DIR ZOO_LOG4J_PROP JAVA CLASSPATH
