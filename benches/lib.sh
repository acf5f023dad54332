# Helpers the benchmark scripts source.

# wait_for_port PORT [PID] [SECONDS]: returns once 127.0.0.1:PORT accepts a connection. Fails,
# saying why, if process PID exits first or SECONDS (default 10) pass. The scripts used to sleep
# half a second after starting a server; on a loaded machine Redis was not listening by then,
# and redis-benchmark, refused, waited for good on clients it never connected.
wait_for_port() {
  local port=$1 pid=${2:-} limit=${3:-10}
  local deadline=$((SECONDS + limit))
  until (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2> /dev/null; then
      echo "the server (pid $pid) exited before listening on port $port" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "nothing listening on 127.0.0.1:$port after ${limit}s" >&2
      return 1
    fi
    sleep 0.05
  done
}
