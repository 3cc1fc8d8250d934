#!/usr/bin/env bash
# Checks here, without a GPU and before any GPU time is spent, that what scripts/gpu-pack.sh left
# in target/gpu-carry comes back whole through scripts/gpu-unpack.sh when it is carried one
# folder per call:
# 1. each folder in turn is copied alone into a scratch repository (what one call brings) and
#    gpu-unpack.sh runs there against one scratch DEST that persists between the "calls";
#    the unpacked files must match the sha256 sums in BUILD-INFO, and a further run must see the
#    bundle already there;
# 2. the same in reverse order, with one byte of one piece changed: the run that completes the
#    set must fail (exit 1) naming that piece's folder, and carrying that folder again intact
#    must finish the unpacking.
#
# usage (repository root, after scripts/gpu-pack.sh):  scripts/gpu-carry-check.sh
# Needs about three times the bundle's size free in TMPDIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
carry=$repo/target/gpu-carry
mapfile -t dirs < <(find "$carry" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
((${#dirs[@]} > 0)) || { echo "gpu-carry-check.sh: nothing in $carry: run scripts/gpu-pack.sh first" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# One call: a repository holding only folder $2 (from $3, default $carry), unpacking into $1.
call() {
    local dest=$1 dir=$2 from=${3:-$carry}
    rm -rf "$scratch/call" && mkdir -p "$scratch/call/target/gpu-carry"
    cp -r "$from/$dir" "$scratch/call/target/gpu-carry/"
    (cd "$scratch/call" && bash "$repo/scripts/gpu-unpack.sh" target/gpu-carry "$dest")
}
fail() { echo "gpu-carry-check.sh: FAILED: $*" >&2; exit 1; }

echo "== ${#dirs[@]} calls in order: ${dirs[*]}"
dest=$scratch/dest1
for dir in "${dirs[@]}"; do call "$dest" "$dir" || fail "gpu-unpack.sh failed on folder $dir"; done
[[ -f $dest/ready && -f $dest/env.sh ]] || fail "nothing unpacked after the last folder"
(cd "$dest" && grep -E '^[0-9a-f]{64}  ' BUILD-INFO | sha256sum --check --quiet) ||
    fail "the unpacked files differ from BUILD-INFO's sums"
echo "unpacked files match BUILD-INFO ($(grep -cE '^[0-9a-f]{64}  ' "$dest/BUILD-INFO") files)"
call "$dest" "${dirs[0]}" | grep -q 'already holds' || fail "a further run did not see the bundle"
rm -rf "$dest"

victim=${dirs[$((${#dirs[@]} / 2))]}
echo "== in reverse order, one byte of folder $victim's piece changed"
mkdir -p "$scratch/bad"
cp -r "$carry/$victim" "$scratch/bad/"
piece=$(find "$scratch/bad/$victim" -type f ! -name MANIFEST)
python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 0xFF]))' "$piece"
cmp -s "$piece" "$carry/$victim/$(basename "$piece")" && fail "the piece was not changed"
dest=$scratch/dest2
for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
    dir=${dirs[$i]}
    if [[ $dir == "$victim" ]]; then from=$scratch/bad; else from=$carry; fi
    set +e
    out=$(call "$dest" "$dir" "$from" 2>&1)
    rc=$?
    set -e
    echo "$out"
    if ((i > 0)); then
        ((rc == 0)) || fail "gpu-unpack.sh failed before the set was complete"
    else
        ((rc == 1)) || fail "gpu-unpack.sh accepted a corrupted piece (exit $rc)"
        grep -q "carry $victim again" <<<"$out" || fail "the refusal does not name folder $victim"
    fi
done
[[ ! -f $dest/ready ]] || fail "a corrupted set was unpacked"
echo "== folder $victim carried again, intact"
call "$dest" "$victim" || fail "gpu-unpack.sh failed after the intact folder came"
(cd "$dest" && grep -E '^[0-9a-f]{64}  ' BUILD-INFO | sha256sum --check --quiet) ||
    fail "the unpacked files differ from BUILD-INFO's sums"
echo "gpu-carry-check.sh: ok (${#dirs[@]} folders; a corrupted piece refused, then recovered)"
