#!/bin/bash
# Benchmark cairn against restic (and rustic, where installed) on one corpus and one local
# S3 server (s3s-fs on 127.0.0.1), in the same run: first backup, no-change backup, backup
# after a small change, full restore, single-file restore. Prints a table with the
# restic/cairn ratio of each figure and writes the same as JSON.
#
#   scripts/bench.sh                      # corpus in ../bench/corpus (built if missing)
#   CORPUS=/some/dir scripts/bench.sh     # any other directory (used as it is)
#
# Environment: CORPUS, BENCH_DIR (work area, default ../bench), JSON (output file,
# default $BENCH_DIR/results.json), TOOLS (default "cairn restic rustic"),
# CARGO_TARGET_DIR (where cairn is built), KEEP=1 (keep repositories and restores).
# The "small change" step modifies the corpus: it sets the mtime of 1% of the files and
# rewrites 4 MiB inside the largest file (the disk image in the standard corpus).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$ROOT/../bench}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
CORPUS=${CORPUS:-$BENCH_DIR/corpus}
JSON=${JSON:-$BENCH_DIR/results.json}
TOOLS=${TOOLS:-cairn restic rustic}
WORK=$BENCH_DIR/run
PORT=${PORT:-18014}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1

log() { printf '== %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------
log "building cairn (release)"
(cd "$ROOT" && cargo build --release --locked --quiet --bins)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CAIRN=$TARGET/release/cairn
if ! command -v restic >/dev/null; then
    log "installing restic from Debian's packages"
    apt-get update -qq && apt-get install -y -qq restic >/dev/null
fi
S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
if [ ! -x "$S3S" ]; then
    # The release line the tests use (0.14): newer ones need a newer Rust than 1.95.
    log "installing s3s-fs 0.14"
    cargo install --locked s3s-fs --version '~0.14' --features binary
    S3S=$HOME/.cargo/bin/s3s-fs
fi
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
command -v rustic >/dev/null || TOOLS=${TOOLS/rustic/}

# --- corpus -----------------------------------------------------------------------------
if [ ! -d "$CORPUS" ]; then
    log "building the corpus in $CORPUS"
    bash "$ROOT/../shared/bench/make-corpus.sh" "$CORPUS"
fi
CORPUS=$(cd "$CORPUS" && pwd)
NFILES=$(find "$CORPUS" -type f | wc -l)
CBYTES=$(du -sb "$CORPUS" | cut -f1)
# The single file: the largest regular file, whose path has no spaces.
BIG=$(find "$CORPUS" -type f -printf '%s %p\n' | grep -v ' .* ' | sort -n | tail -1 | cut -d' ' -f2)
ONE=$(find "$CORPUS" -type f -size +1M -size -64M -printf '%p\n' | grep -v ' ' | sort | head -1)
ONE=${ONE:-$BIG}

# --- server -----------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/s3" "$WORK/restore"
printf 'bench-passphrase\n' >"$WORK/pw"
chmod 600 "$WORK/pw"
RUST_LOG=s3s::service=debug "$S3S" --host 127.0.0.1 --port "$PORT" \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
    "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
S3PID=$!
trap 'kill $S3PID 2>/dev/null || true' EXIT
sleep 1
EP=http://127.0.0.1:$PORT
requests() { grep -c 's3s::service: duration' "$WORK/s3s.log" || true; }

repo_of() {
    case $1 in
        cairn) echo "s3:$EP/cairn" ;;
        restic) echo "s3:$EP/restic" ;;
        rustic) echo "s3:$EP/rustic" ;;
    esac
}

# run TOOL OP CMD...: time one command, record wall, cpu, rss, requests, stored bytes.
RESULTS=$WORK/results.tsv
: >"$RESULTS"
run() {
    local tool=$1 op=$2
    shift 2
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    local before after
    before=$(requests)
    if ! /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/$tool-$op.out" 2>"$WORK/$tool-$op.err"; then
        echo "$tool $op failed; see $WORK/$tool-$op.err" >&2
        tail -5 "$WORK/$tool-$op.err" >&2
        exit 1
    fi
    after=$(requests)
    local wall user sys rss stored
    read -r wall user sys rss <"$WORK/time"
    stored=$(du -sb "$WORK/s3/$tool" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$op" "$wall" \
        "$(echo "$user + $sys" | bc)" "$rss" "$((after - before))" "$stored" >>"$RESULTS"
    log "$tool $op: ${wall}s wall, ${rss} KiB peak, $((after - before)) requests"
}

backup() {
    local tool=$1 op=$2
    case $tool in
        cairn) run cairn "$op" "$CAIRN" --repo "$(repo_of cairn)" --password-file "$WORK/pw" backup --json "$CORPUS" ;;
        restic) run restic "$op" restic --repo "$(repo_of restic)" --password-file "$WORK/pw" backup --json --quiet "$CORPUS" ;;
        rustic) run rustic "$op" rustic --repository "opendal:s3" -o bucket=rustic -o endpoint="$EP" -o region=us-east-1 --password-file "$WORK/pw" backup "$CORPUS" ;;
    esac
}

restore() {
    local tool=$1 op=$2 target=$WORK/restore/$1-$2
    shift 2
    rm -rf "$target"
    case $tool in
        cairn) run cairn "$op" "$CAIRN" --repo "$(repo_of cairn)" --password-file "$WORK/pw" restore latest --target "$target" "$@" ;;
        restic) run restic "$op" restic --repo "$(repo_of restic)" --password-file "$WORK/pw" restore latest --target "$target" "$@" ;;
        rustic) run rustic "$op" rustic --repository "opendal:s3" -o bucket=rustic -o endpoint="$EP" -o region=us-east-1 --password-file "$WORK/pw" restore latest "$target" "$@" ;;
    esac
}

verify() {
    local target=$1
    if ! diff -r --no-dereference "$CORPUS" "$target$CORPUS" >"$WORK/diff.out" 2>&1; then
        echo "restore into $target differs from the corpus:" >&2
        head -20 "$WORK/diff.out" >&2
        exit 1
    fi
}

for t in $TOOLS; do
    mkdir -p "$WORK/s3/$t"
    case $t in
        cairn) "$CAIRN" --repo "$(repo_of cairn)" --password-file "$WORK/pw" init >/dev/null 2>&1 ;;
        restic) restic --repo "$(repo_of restic)" --password-file "$WORK/pw" init >/dev/null ;;
        rustic) rustic --repository "opendal:s3" -o bucket=rustic -o endpoint="$EP" -o region=us-east-1 --password-file "$WORK/pw" init >/dev/null 2>&1 ;;
    esac
    # Each tool starts without a local cache, as a new machine would.
    rm -rf "$HOME/.cache/cairn" "$HOME/.cache/restic" "$HOME/.cache/rustic"
done

log "corpus $CORPUS: $NFILES files, $CBYTES bytes"
for t in $TOOLS; do backup "$t" backup-first; done
for t in $TOOLS; do backup "$t" backup-nochange; done

log "changing 1% of the files' mtimes and 4 MiB inside $BIG"
find "$CORPUS" -type f -printf '%p\0' | awk 'BEGIN{RS="\0"; ORS="\0"} NR % 100 == 0' | xargs -0 -r touch
python3 - "$BIG" <<'PY'
import os, sys
p = sys.argv[1]; size = os.path.getsize(p)
with open(p, "r+b") as f:
    for k in range(4):
        f.seek((size // 5) * (k + 1) // (1 << 20) * (1 << 20) % max(size - (1 << 20), 1))
        f.write(os.urandom(min(1 << 20, size)))
PY
for t in $TOOLS; do backup "$t" backup-change; done

for t in $TOOLS; do
    restore "$t" restore-full
    verify "$WORK/restore/$t-restore-full"
    [ -n "${KEEP:-}" ] || rm -rf "$WORK/restore/$t-restore-full"
done
for t in $TOOLS; do
    restore "$t" restore-file --include "$ONE"
    cmp "$ONE" "$WORK/restore/$t-restore-file$ONE"
done

log "index memory at one million blobs"
"$TARGET/release/cairn-bench-index" 1000000 >"$WORK/index_memory.json"

python3 - "$RESULTS" "$WORK/index_memory.json" "$JSON" "$CORPUS" "$NFILES" "$CBYTES" "$ONE" <<'PY'
import json, sys
res, idx, out, corpus, nfiles, cbytes, one = sys.argv[1:]
rows = {}
tools = []
for line in open(res):
    t, op, wall, cpu, rss, req, stored = line.rstrip("\n").split("\t")
    if t not in tools: tools.append(t)
    rows.setdefault(op, {})[t] = dict(wall_s=float(wall), cpu_s=float(cpu),
        peak_rss_mib=round(int(rss) / 1024, 1), requests=int(req), stored_bytes=int(stored))
ratio = lambda a, b: round(a / b, 2) if b else None
for op, per in rows.items():
    if "cairn" in per:
        for t in tools:
            if t != "cairn" and t in per:
                per[f"{t}/cairn"] = {k: ratio(per[t][k], per["cairn"][k]) for k in per["cairn"]}
index = json.load(open(idx))
doc = dict(corpus=dict(path=corpus, files=int(nfiles), bytes=int(cbytes), single_file=one),
           operations=rows, index_memory=index)
json.dump(doc, open(out, "w"), indent=2)
keys = [("wall_s", "wall s"), ("cpu_s", "cpu s"), ("peak_rss_mib", "RSS MiB"),
        ("requests", "requests"), ("stored_bytes", "stored MB")]
print(f"\ncorpus: {corpus} ({nfiles} files, {int(cbytes)/1e6:.0f} MB)\n")
hdr = f"{'operation':<16}{'figure':<10}" + "".join(f"{t:>12}" for t in tools) + "".join(f"{t+'/cairn':>14}" for t in tools if t != "cairn")
print(hdr); print("-" * len(hdr))
for op, per in rows.items():
    for k, name in keys:
        vals = []
        for t in tools:
            v = per.get(t, {}).get(k)
            if v is None: vals.append(f"{'-':>12}")
            elif k == "stored_bytes": vals.append(f"{v/1e6:>12.1f}")
            else: vals.append(f"{v:>12}")
        rs = [f"{str(per.get(t+'/cairn', {}).get(k, '-')):>14}" for t in tools if t != "cairn"]
        print(f"{op:<16}{name:<10}" + "".join(vals) + "".join(rs))
    print()
print(f"index memory: {index['bytes_per_blob']:.1f} bytes per blob at {index['blobs']} blobs "
      f"({index['total_mib']:.1f} MiB); a lookup takes {index['lookup_present_ns']:.0f} ns "
      f"(an absent id {index['lookup_absent_ns']:.0f} ns)")
print(f"JSON: {out}")
PY
[ -n "${KEEP:-}" ] || rm -rf "$WORK/s3"
