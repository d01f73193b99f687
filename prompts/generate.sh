#!/bin/sh
# Regenerates the WAV prompts of one language from its text file with espeak-ng and sox.
#
#   prompts/generate.sh [LANG [VOICE]]      default: en en-us
#
# Reads prompts/LANG.txt ("name|text" per line, '#' starts a comment) and writes
# prompts/LANG/<name>.wav: 8 kHz, mono, 16-bit signed PCM, leading/trailing silence trimmed,
# peak-normalised to -3 dBFS, with a short pause after each so concatenated prompts
# ("twelve" "dollars") do not run into each other. Sentences (text ending in '.') get a
# longer pause. Output is reproducible: sox runs without dither (-D).
set -eu

LANG_CODE="${1:-en}"
VOICE="${2:-en-us}"
SPEED="${SPEED:-150}"
HERE="$(cd "$(dirname "$0")" && pwd)"
TEXTS="$HERE/$LANG_CODE.txt"
OUT="$HERE/$LANG_CODE"

command -v espeak-ng >/dev/null || { echo "espeak-ng is missing (apt-get install espeak-ng)" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox is missing (apt-get install sox)" >&2; exit 1; }
[ -f "$TEXTS" ] || { echo "no prompt texts at $TEXTS" >&2; exit 1; }

mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

count=0
while IFS='|' read -r name text; do
    case "$name" in ''|'#'*) continue ;; esac
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$TMP/raw.wav" "$text"
    case "$text" in *.) pause=0.25 ;; *) pause=0.06 ;; esac
    sox -D "$TMP/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$OUT/$name.wav" \
        silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse \
        gain -n -3 pad 0 "$pause"
    count=$((count + 1))
done < "$TEXTS"
echo "wrote $count prompts to $OUT"
