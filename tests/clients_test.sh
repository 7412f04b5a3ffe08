#!/usr/bin/env bash
# The Python and Node client examples against a real mod-server (shipped
# model, loopback, a free port): each makes one unary and one streaming call
# and must get the same tokens both ways, then tokenizes the prompt and gets
# a guided answer from a list, and n=2 completions the same in unary and
# stream; then the same against a server with TLS and a bearer token.
# Python stubs are generated from
# proto/ here; the Node packages are installed from npm into a scratch folder.
# Then mod-client's --logprobs prints a line per generated token, and its
# --logit-bias, --min-tokens, --ignore-eos, --stop-token-ids, --prompt-token-ids,
# --min-p, --include-stop, --truncate-prompt-tokens, --cache-salt, --priority
# and --n reach the server, and its tokenize
# and detokenize commands round-trip a prompt, and --guided-regex,
# --guided-choice and --guided-json hold the completion to their pattern.
# Usage: tests/clients_test.sh BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$1
src=$2
work=$(mktemp -d)
server="" secure=""
cleanup() {
  if [[ -n "$server" ]]; then kill "$server" 2>/dev/null || true; fi
  if [[ -n "$secure" ]]; then kill "$secure" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/mod-server" --model "$src/models/mod-small" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 2>"$work/server.log" &
server=$!
for _ in $(seq 1 300); do grep -q '(port [0-9]*)' "$work/server.log" && break; sleep 0.1; done
port=$(grep -o '(port [0-9]*)' "$work/server.log" | head -1 | tr -dc 0-9)
[[ -n "$port" ]] || { cat "$work/server.log"; echo "server did not start"; exit 1; }
address="127.0.0.1:$port"

check() {  # check NAME OUTPUT_FILE
  cat "$2"
  grep -q '^unary: 24 tokens, finish FINISH_REASON_LENGTH' "$2" || { echo "FAIL: $1 unary call"; exit 1; }
  grep -q '^stream: 24 tokens in [0-9]* messages, finish FINISH_REASON_LENGTH' "$2" || { echo "FAIL: $1 stream call"; exit 1; }
  grep -q '^same tokens: yes' "$2" || { echo "FAIL: $1 unary and stream differ"; exit 1; }
  # "The jury said " is 14 bytes: 14 prompt tokens scored, each logprob < 0.
  grep -qE '^prompt logprobs: 14 tokens, total -[0-9]+\.[0-9]{3}$' "$2" || { echo "FAIL: $1 prompt logprobs"; exit 1; }
  grep -q '^tokenize: 14 ids, prompt_tokens 15$' "$2" || { echo "FAIL: $1 tokenize"; exit 1; }
  grep -qE '^guided choice: (yes|no)$' "$2" || { echo "FAIL: $1 guided choice"; exit 1; }
  grep -q '^n=2: 2 completions, stream the same: yes$' "$2" || { echo "FAIL: $1 n=2 completions"; exit 1; }
  echo "PASS: $1"
}

echo "== Python (python3-grpcio, stubs from proto/)"
mkdir -p "$work/py"
protoc -I "$src/proto" --python_out="$work/py" --grpc_out="$work/py" \
  --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" modserve/v1/modserve.proto
PYTHONPATH="$work/py" /usr/bin/python3 "$src/client/python/example.py" --server "$address" --max-tokens 24 >"$work/py.out"
check python "$work/py.out"

echo "== Node (@grpc/grpc-js + @grpc/proto-loader from npm)"
mkdir -p "$work/node"
cp "$src/client/node/package.json" "$src/client/node/example.js" "$work/node/"
(cd "$work/node" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
node "$work/node/example.js" --server "$address" --proto-dir "$src/proto" --max-tokens 24 >"$work/node.out"
check node "$work/node.out"
[[ "$(grep '^prompt logprobs' "$work/py.out")" == "$(grep '^prompt logprobs' "$work/node.out")" ]] ||
  { echo "FAIL: Python and Node scored the prompt differently"; exit 1; }
echo "PASS: Python and Node give the same prompt score"

echo "== Python and Node against a server with TLS and a bearer token"
# A self-signed certificate for 127.0.0.1 (openssl comes with ca-certificates).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
printf 'example-token-0123456789\n' >"$work/token"
"$bin/mod-server" --model "$src/models/mod-small" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --tls-cert-file "$work/cert.pem" --tls-key-file "$work/key.pem" --auth-token-file "$work/token" 2>"$work/secure.log" &
secure=$!
for _ in $(seq 1 300); do grep -q '(port [0-9]*)' "$work/secure.log" && break; sleep 0.1; done
secure_address="127.0.0.1:$(grep -o '(port [0-9]*)' "$work/secure.log" | head -1 | tr -dc 0-9)"
PYTHONPATH="$work/py" /usr/bin/python3 "$src/client/python/example.py" --server "$secure_address" --max-tokens 24 \
  --tls-ca "$work/cert.pem" --token-file "$work/token" >"$work/py-secure.out"
check "python (TLS, token)" "$work/py-secure.out"
node "$work/node/example.js" --server "$secure_address" --proto-dir "$src/proto" --max-tokens=24 \
  --tls-ca "$work/cert.pem" --token-file "$work/token" >"$work/node-secure.out"
check "node (TLS, token)" "$work/node-secure.out"
if PYTHONPATH="$work/py" /usr/bin/python3 "$src/client/python/example.py" --server "$secure_address" \
  --tls-ca "$work/cert.pem" >/dev/null 2>"$work/noauth.err"; then
  echo "FAIL: the Python example without the token was served"; exit 1
fi
grep -q '^python client: UNAUTHENTICATED' "$work/noauth.err" || { cat "$work/noauth.err"; exit 1; }
if node "$work/node/example.js" --server "$secure_address" --proto-dir "$src/proto" --max-tokens x 2>"$work/badarg.err"; then
  echo "FAIL: the Node example took --max-tokens x"; exit 1
fi
grep -q 'max-tokens must be a positive number, got x' "$work/badarg.err" || { cat "$work/badarg.err"; exit 1; }
kill -TERM "$secure"
wait "$secure" || true
secure=""
echo "PASS: the examples with TLS and a token; without the token: UNAUTHENTICATED"

echo "== mod-client --logprobs"
"$bin/mod-client" --server "$address" generate --max-tokens 8 --logprobs 2 >"$work/lp.out"
cat "$work/lp.out"
lines=$(grep -cE "^token [0-9]+ .* logprob -?[0-9.]+  top: .* -?[0-9.]+, .* -?[0-9.]+$" "$work/lp.out" || true)
[[ "$lines" == 8 ]] || { echo "FAIL: mod-client --logprobs printed $lines token lines, not 8"; exit 1; }
echo "PASS: mod-client --logprobs"
"$bin/mod-client" --server "$address" generate --prompt "Hello" --max-tokens 2 --prompt-logprobs >"$work/plp.out"
lines=$(grep -cE "^prompt token [0-9]+ .* logprob -?[0-9.]+$" "$work/plp.out" || true)
[[ "$lines" == 5 ]] || { echo "FAIL: --prompt-logprobs printed $lines lines for a 5-byte prompt"; cat "$work/plp.out"; exit 1; }
echo "PASS: mod-client --prompt-logprobs"

echo "== mod-client --logit-bias, --min-tokens, --ignore-eos"
text=$("$bin/mod-client" --server "$address" generate --max-tokens 6 --logit-bias 65:100 2>/dev/null)
[[ "$text" == "AAAAAA" ]] || { echo "FAIL: --logit-bias 65:100 gave \"$text\", not AAAAAA"; exit 1; }
# EOS forced by its bias: held back for 3 tokens; with --ignore-eos it fills all 6.
"$bin/mod-client" --server "$address" generate --max-tokens 6 --min-tokens 3 --logit-bias 257:100 2>"$work/eos.err" >/dev/null
grep -q "finish: eos; prompt [0-9]* tokens ([0-9]* cached), completion 4 tokens" "$work/eos.err" ||
  { echo "FAIL: --min-tokens 3 with EOS forced:"; cat "$work/eos.err"; exit 1; }
"$bin/mod-client" --server "$address" generate --max-tokens 6 --ignore-eos --logit-bias 257:100 2>"$work/eos.err" >/dev/null
grep -q "finish: length; prompt [0-9]* tokens ([0-9]* cached), completion 6 tokens" "$work/eos.err" ||
  { echo "FAIL: --ignore-eos with EOS forced:"; cat "$work/eos.err"; exit 1; }
echo "== mod-client --stop-token-ids, --prompt-token-ids, --min-p"
# 'A' forced by its bias and listed as a stop id: one token, no text, STOP naming it.
text=$("$bin/mod-client" --server "$address" generate --max-tokens 6 --logit-bias 65:100 --stop-token-ids 10,65 2>"$work/stop.err")
if [[ -n "$text" ]] || ! grep -q "finish: stop (stop token 65); prompt [0-9]* tokens ([0-9]* cached), completion 1 tokens" "$work/stop.err"; then
  echo "FAIL: --stop-token-ids 10,65 with 'A' forced gave \"$text\":"; cat "$work/stop.err"; exit 1
fi
# "Hi" as its byte ids gives the text prompt's greedy tokens; min_p 1 at temperature 1 too.
want=$("$bin/mod-client" --server "$address" generate --prompt "Hi" --max-tokens 8 2>/dev/null)
got=$("$bin/mod-client" --server "$address" generate --prompt-token-ids 72,105 --max-tokens 8 2>/dev/null)
[[ "$got" == "$want" ]] || { echo "FAIL: --prompt-token-ids 72,105 gave \"$got\", --prompt Hi \"$want\""; exit 1; }
got=$("$bin/mod-client" --server "$address" generate --prompt "Hi" --max-tokens 8 --temperature 1 --min-p 1 --seed 3 2>/dev/null)
[[ "$got" == "$want" ]] || { echo "FAIL: --min-p 1 gave \"$got\", greedy \"$want\""; exit 1; }
if "$bin/mod-client" --server "$address" generate --stop-token-ids 10,x 2>"$work/bad.err"; then
  echo "FAIL: --stop-token-ids 10,x was accepted"; exit 1
fi
grep -q 'stop-token-ids entry "x" is not a token id' "$work/bad.err" || { cat "$work/bad.err"; exit 1; }
echo "PASS: mod-client --stop-token-ids, --prompt-token-ids, --min-p"
echo "== mod-client --include-stop, --truncate-prompt-tokens"
# 'A' forced and "AA" a stop string: cut from the text, or kept with --include-stop.
text=$("$bin/mod-client" --server "$address" generate --max-tokens 6 --logit-bias 65:100 --stop AA 2>/dev/null)
[[ -z "$text" ]] || { echo "FAIL: --stop AA with 'A' forced gave \"$text\""; exit 1; }
text=$("$bin/mod-client" --server "$address" generate --max-tokens 6 --logit-bias 65:100 --stop AA --include-stop 2>/dev/null)
[[ "$text" == "AA" ]] || { echo "FAIL: --include-stop gave \"$text\", not AA"; exit 1; }
# A prompt cut to its last 2 bytes, "Hi", gives what "Hi" gives.
got=$("$bin/mod-client" --server "$address" generate --prompt "Oh, Hi" --truncate-prompt-tokens 2 --max-tokens 8 2>/dev/null)
[[ "$got" == "$want" ]] || { echo "FAIL: --truncate-prompt-tokens 2 of \"Oh, Hi\" gave \"$got\", --prompt Hi \"$want\""; exit 1; }
echo "PASS: mod-client --include-stop, --truncate-prompt-tokens"
echo "== mod-client tokenize, detokenize"
# The ids tokenize prints, sent as --prompt-token-ids, give the text prompt's tokens; detokenize gives the text back.
tokenized=$("$bin/mod-client" --server "$address" tokenize --prompt "Hi")
[[ "$tokenized" == $'72,105\nprompt_tokens 3' ]] || { echo "FAIL: tokenize --prompt Hi printed \"$tokenized\""; exit 1; }
got=$("$bin/mod-client" --server "$address" generate --prompt-token-ids "$(head -1 <<<"$tokenized")" --max-tokens 8 2>/dev/null)
[[ "$got" == "$want" ]] || { echo "FAIL: tokenize's ids as --prompt-token-ids gave \"$got\", --prompt Hi \"$want\""; exit 1; }
text=$("$bin/mod-client" --server "$address" detokenize --token-ids 256,72,105,257)
[[ "$text" == "Hi" ]] || { echo "FAIL: detokenize 256,72,105,257 printed \"$text\""; exit 1; }
if "$bin/mod-client" --server "$address" detokenize --token-ids 72,300 2>"$work/bad.err"; then
  echo "FAIL: detokenize of id 300 was accepted"; exit 1
fi
grep -q 'INVALID_ARGUMENT: token_ids\[1\] is 300' "$work/bad.err" || { cat "$work/bad.err"; exit 1; }
echo "PASS: mod-client tokenize, detokenize"
echo "== mod-client --guided-regex, --guided-choice, --guided-json"
got=$("$bin/mod-client" --server "$address" generate --prompt "Call " --max-tokens 20 --guided-regex '[0-9]{3}-[0-9]{4}' 2>/dev/null)
[[ "$got" =~ ^[0-9]{3}-[0-9]{4}$ ]] || { echo "FAIL: --guided-regex gave \"$got\""; exit 1; }
got=$("$bin/mod-client" --server "$address" generate --prompt "Is it? " --max-tokens 20 --guided-choice 'yes|no|n/a' 2>/dev/null)
[[ "$got" == yes || "$got" == no || "$got" == n/a ]] || { echo "FAIL: --guided-choice 'yes|no|n/a' gave \"$got\""; exit 1; }
got=$("$bin/mod-client" --server "$address" generate --prompt "Is it? " --max-tokens 20 \
  --guided-json '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}' 2>/dev/null)
[[ "$got" =~ ^\{\"ok\":\ ?(true|false)\}$ ]] || { echo "FAIL: --guided-json gave \"$got\""; exit 1; }
echo "PASS: mod-client --guided-regex, --guided-choice, --guided-json"
echo "== mod-client --cache-salt"
long="The jury further said in term-end presentments that the City Executive Committee had charge of it."
cached() {
  "$bin/mod-client" --server "$address" generate --prompt "$long" --max-tokens 2 "$@" 2>&1 >/dev/null |
    grep -o '([0-9]* cached)' | tr -dc 0-9
}
cached --cache-salt clients-test >/dev/null
[[ "$(cached --cache-salt clients-test)" == 96 ]] || { echo "FAIL: the second call under a salt found no cached prefix"; exit 1; }
[[ "$(cached --cache-salt other-tenant)" == 0 ]] || { echo "FAIL: another salt found the prefix"; exit 1; }
echo "PASS: mod-client --cache-salt"
echo "== mod-client --priority"
# This server runs scheduling_policy: fcfs, so a priority is refused, naming the field.
if "$bin/mod-client" --server "$address" generate --max-tokens 2 --priority 3 2>"$work/prio.err" >/dev/null; then
  echo "FAIL: --priority 3 was accepted by an fcfs server"; exit 1
fi
grep -q "INVALID_ARGUMENT.*priority is 3 but the server runs scheduling_policy: fcfs" "$work/prio.err" ||
  { echo "FAIL: --priority message:"; cat "$work/prio.err"; exit 1; }
"$bin/mod-client" --server "$address" generate --max-tokens 2 --priority 0 >/dev/null 2>&1 || { echo "FAIL: --priority 0 refused"; exit 1; }
if "$bin/mod-client" --server "$address" generate --priority 9999999999 2>"$work/prio.err"; then
  echo "FAIL: --priority past int32 was accepted"; exit 1
fi
grep -q -- "--priority must be in" "$work/prio.err" || { echo "FAIL: --priority range message:"; cat "$work/prio.err"; exit 1; }
echo "PASS: mod-client --priority"

echo "== mod-client --n"
# Three sampled completions, each printed whole with its usage; unary and
# stream give the same texts, and completion 0 is the n = 1 request's.
for cmd in generate stream; do
  "$bin/mod-client" --server "$address" "$cmd" --max-tokens 12 --temperature 1 --seed 5 --n 3 >"$work/n.$cmd" 2>"$work/n.$cmd.err"
  [[ $(grep -c '^--- completion [0-2] ---$' "$work/n.$cmd") == 3 ]] || { echo "FAIL: $cmd --n 3 output:"; cat "$work/n.$cmd"; exit 1; }
  [[ $(grep -c 'completion 12 tokens' "$work/n.$cmd.err") == 3 ]] || { echo "FAIL: $cmd --n 3 usage:"; cat "$work/n.$cmd.err"; exit 1; }
done
cmp -s "$work/n.generate" "$work/n.stream" || { echo "FAIL: generate and stream --n 3 differ"; diff "$work/n.generate" "$work/n.stream"; exit 1; }
"$bin/mod-client" --server "$address" generate --max-tokens 12 --temperature 1 --seed 5 >"$work/n.one" 2>/dev/null
[[ "$(sed -n '2p' "$work/n.generate")" == "$(head -n 1 "$work/n.one")" ]] ||
  { echo "FAIL: completion 0 is not the n = 1 request's:"; cat "$work/n.generate" "$work/n.one"; exit 1; }
if "$bin/mod-client" --server "$address" generate --n 9 2>"$work/n.err" >/dev/null; then
  echo "FAIL: --n 9 was accepted (max_n is 8)"; exit 1
fi
grep -q "INVALID_ARGUMENT.*n must be in \[0, 8\]" "$work/n.err" || { echo "FAIL: --n 9 message:"; cat "$work/n.err"; exit 1; }
# Routes of interleaved completions: each line names its completion; 2 x 4 tokens.
"$bin/mod-client" --server "$address" stream --max-tokens 4 --n 2 --routes >"$work/n.routes"
[[ $(grep -cE '^completion [01] token [0-9]+ layers \[[0-9,]*\]$' "$work/n.routes") == 8 ]] ||
  { echo "FAIL: stream --n 2 --routes:"; cat "$work/n.routes"; exit 1; }
echo "PASS: mod-client --n"
if "$bin/mod-client" --server "$address" bench --requests 1 --stop x 2>"$work/bad.err" >/dev/null; then
  echo "FAIL: bench took --stop, which it does not send"; exit 1
fi
grep -q -- '--stop is not used by bench' "$work/bad.err" || { cat "$work/bad.err"; exit 1; }
echo "PASS: bench refuses a single request's flags"
for bad in 65=1 '65:1,' 65:1x :1 65: 65:1,65:2; do
  if "$bin/mod-client" --server "$address" generate --logit-bias "$bad" 2>"$work/bad.err"; then
    echo "FAIL: --logit-bias $bad was accepted"; exit 1
  fi
  grep -qE 'is not ID:BIAS|twice' "$work/bad.err" || { echo "FAIL: bad --logit-bias $bad message:"; cat "$work/bad.err"; exit 1; }
done
echo "PASS: mod-client --logit-bias, --min-tokens, --ignore-eos"

kill -TERM "$server"
wait "$server"
server=""
echo "PASS: server drained and exited 0"
