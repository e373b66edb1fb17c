# Shared by bench/run.sh and bench/ab.sh (sourced from the repository root,
# with LOADGEN set): the limit receiver, and what happens to a run's data.

# Measures the limit once: `loadgen sink` on PORT writes each stream to a
# file under DIR and fsyncs it, `loadgen limit` sends it STREAMS streams of
# SIZE bytes. Receiver `limit` writes through the page cache,
# `limit-dontcache` with RWF_DONTCACHE. The JSON line goes to OUT (and
# stdout) as server NAME, scenario KEY; the sink's output to LOG.
measure_limit() { # receiver name port dir size streams key out log
  local receiver=$1 name=$2 port=$3 dir=$4 size=$5 streams=$6 key=$7 out=$8 log=$9 rc=0
  local flags=()
  case $receiver in
    limit) ;;
    limit-dontcache) flags=(--uncached-after 0) ;;
    *) echo "measure_limit: unknown receiver $receiver" >&2; return 2 ;;
  esac
  "$LOADGEN" sink --listen 127.0.0.1:$port --dir "$dir" "${flags[@]}" >"$log" 2>&1 &
  SINK_PID=$!
  sleep 0.3; sync
  timeout "${LOADGEN_TIMEOUT:-900}" "$LOADGEN" limit --addr 127.0.0.1:$port --size "$size" \
    --streams "$streams" --pid $SINK_PID --server "$name" --scenario "$key" --out "$out" || rc=$?
  kill $SINK_PID; wait $SINK_PID 2>/dev/null || true; SINK_PID=
  rm -rf "$dir"
  return $rc
}

# A server's data directory after its run. (3)'s thousands of files are
# kept in bench/work/.trash, never removed here: removing them slows every
# file created in the next minutes (bench/README.md, "Removed files").
# Other scenarios' directories hold few, large files and go at once.
TRASH=bench/work/.trash
discard() { # dir many-files(1|0)
  if [ "$2" = 1 ]; then
    mkdir -p "$TRASH"; mv "$1" "$TRASH/$(basename "$1").$RANDOM$RANDOM"
  else
    rm -rf "$1"
  fi
}

# Says where (3)'s files were kept, if any were.
trash_notice() {
  if [ -d "$TRASH" ]; then echo "kept (3)'s files in $TRASH: remove it when done measuring, then wait six minutes before measuring (3) again (bench/README.md)" >&2; fi
}
