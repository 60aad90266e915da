#!/usr/bin/env bash
# Prepares this machine's services the way the test suite needs them: starts each local
# service that is down, sets the server settings the tests rely on, and installs the Debian
# packages that later tests use when they are missing. Idempotent; `.ci/run` calls it, and
# `npm run services` runs it by hand. Needs root for the package installs and restarts.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_if_down() {
  local name=$1 port=$2
  shift 2
  if port_open "$port"; then
    echo "services: $name is up on $port"
    return
  fi
  echo "services: starting $name"
  "$@" || echo "services: starting $name returned $? (checked below)"
}

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    if port_open "$port"; then return 0; fi
    sleep 1
  done
  echo "services: $name did not come up on port $port within 120 s" >&2
  return 1
}

pg_cluster() { ls /etc/postgresql | head -n1; }

# Debian packages some tests use; installed once, only when missing. `apt-get update` runs
# only when something must be installed.
debian_packages=()
add_if_missing() { command -v "$1" >/dev/null 2>&1 || debian_packages+=("$2"); }
add_if_missing faketime faketime
add_if_missing openssl openssl
# The console's browser tests drive Debian's Chromium through playwright-core.
add_if_missing chromium chromium
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || debian_packages+=(zookeeper)
command -v java >/dev/null 2>&1 || debian_packages+=(default-jre-headless)
if [ "${#debian_packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "services: installing Debian packages: ${debian_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debian_packages[@]}"
  else
    echo "services: missing Debian packages (${debian_packages[*]}); run this script as root to install them" >&2
  fi
fi

start_if_down postgresql 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start'
start_if_down mariadb 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
start_if_down redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start_if_down rabbitmq 5672 rabbitmq-server -detached
# ZooKeeper for the SDK's ZooKeeper locks: our own config so it binds to loopback only, keeps
# its data out of /tmp, and opens no admin (Jetty) or JMX port.
zk_home=/var/lib/tandem-zookeeper
start_zookeeper() {
  mkdir -p "$zk_home/conf" "$zk_home/data"
  cat > "$zk_home/conf/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$zk_home/data
clientPort=2181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
  (cd "$zk_home" && JMXDISABLE=true ZOO_LOG_DIR="$zk_home" /usr/share/zookeeper/bin/zkServer.sh start "$zk_home/conf/zoo.cfg")
}
start_if_down zookeeper 2181 start_zookeeper
start_if_down nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log

wait_for postgresql 5432
wait_for mariadb 3306
wait_for redis 6379
wait_for rabbitmq 5672
wait_for nats 4222
wait_for zookeeper 2181
# An open port is not a booted broker: RabbitMQ accepts TCP before its AMQP listener is ready.
if command -v rabbitmqctl >/dev/null; then
  rabbitmqctl await_startup --timeout 120 >/dev/null || echo "services: rabbitmqctl await_startup failed (tests will say if the broker is unusable)"
fi

# XA tests prepare PostgreSQL transactions; the server ships with max_prepared_transactions = 0
# and the setting only takes effect on restart.
prepared_max=$(psql -h 127.0.0.1 -U postgres -d test -tAc "show max_prepared_transactions")
if [ "${prepared_max:-0}" -lt 64 ]; then
  echo "services: setting PostgreSQL max_prepared_transactions = 64 (was ${prepared_max:-unknown}) and restarting it"
  psql -h 127.0.0.1 -U postgres -d test -c "ALTER SYSTEM SET max_prepared_transactions = 64"
  pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main restart
  wait_for postgresql 5432
  for _ in $(seq 1 60); do psql -h 127.0.0.1 -U postgres -d test -tAc "select 1" >/dev/null 2>&1 && break; sleep 1; done
fi
command -v redis-server >/dev/null || { echo "services: redis-server binary missing (the lock quorum tests start their own)" >&2; exit 1; }
echo "services: ready"
