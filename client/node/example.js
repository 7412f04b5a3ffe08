#!/usr/bin/env node
// Calls mod-server from Node.js: one unary Generate and one GenerateStream,
// then scores the prompt (its log-likelihood), tokenizes it and asks a
// question with guided decoding (the answer one of a list), and asks for n=2
// completions, with @grpc/grpc-js and @grpc/proto-loader (npm install in this folder).
//   node client/node/example.js --server 127.0.0.1:50051
// Against a server with TLS and a bearer token: --tls-ca CA.pem --token-file TOKEN.
'use strict';
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const known = new Set(['server', 'proto-dir', 'prompt', 'max-tokens', 'timeout', 'tls-ca', 'token-file']);
const args = {};  // --name value or --name=value
for (let i = 2; i < process.argv.length; ++i) {
  const m = /^--([^=]+)(?:=(.*))?$/.exec(process.argv[i]);
  if (!m || !known.has(m[1])) usage(`unknown argument ${process.argv[i]}`);
  const value = m[2] !== undefined ? m[2] : process.argv[++i];
  if (value === undefined) usage(`--${m[1]} needs a value`);
  args[m[1]] = value;
}
function usage(why) {
  console.error(`node client: ${why} (flags: ${[...known].map((k) => `--${k}`).join(' ')})`);
  process.exit(2);
}
function arg(name, fallback) { return args[name] !== undefined ? args[name] : fallback; }
function number(name, fallback) {
  const v = Number(arg(name, fallback));
  if (!Number.isFinite(v) || v <= 0) usage(`--${name} must be a positive number, got ${arg(name, fallback)}`);
  return v;
}

const server = arg('server', '127.0.0.1:50051');
const protoDir = arg('proto-dir', path.join(__dirname, '..', '..', 'proto'));
const definition = protoLoader.loadSync('modserve/v1/modserve.proto', {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true,
});
const { Generator } = grpc.loadPackageDefinition(definition).modserve.v1;
const credentials = args['tls-ca'] ? grpc.credentials.createSsl(fs.readFileSync(args['tls-ca'])) : grpc.credentials.createInsecure();
const client = new Generator(server, credentials);
const request = { prompt: arg('prompt', 'The jury said '), max_tokens: number('max-tokens', '32'), return_routes: true };
const timeout = number('timeout', '30');
const deadline = () => new Date(Date.now() + 1000 * timeout);
// Every call's metadata: the bearer token, if any.
const token = args['token-file'] ? fs.readFileSync(args['token-file'], 'ascii').trim() : '';
const metadata = () => {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
};

function fail(what, err) {
  console.error(`node client: ${what}: ${grpc.status[err.code]}: ${err.details}`);
  process.exit(1);
}

client.Generate(request, metadata(), { deadline: deadline() }, (err, unary) => {
  if (err) fail('Generate', err);
  console.log(`unary: ${unary.token_ids.length} tokens, finish ${unary.finish_reason}, ` +
              `routed computed ${unary.usage.routed_computed} skipped ${unary.usage.routed_skipped}`);
  console.log(`unary text: ${JSON.stringify(unary.text)}`);
  const texts = [];
  const ids = [];
  let last = null;
  const call = client.GenerateStream(request, metadata(), { deadline: deadline() });
  call.on('data', (m) => { texts.push(m.text); ids.push(...m.token_ids); last = m; });
  call.on('error', (e) => fail('GenerateStream', e));
  call.on('end', () => {
    console.log(`stream: ${ids.length} tokens in ${texts.length} messages, finish ${last.finish_reason}`);
    console.log(`stream text: ${JSON.stringify(texts.join(''))}`);
    console.log(`same tokens: ${JSON.stringify(ids) === JSON.stringify(unary.token_ids) ? 'yes' : 'no'}`);
    const scoring = { prompt: request.prompt, max_tokens: 1, return_prompt_logprobs: true };
    client.Generate(scoring, metadata(), { deadline: deadline() }, (e, scored) => {
      if (e) fail('Generate (scoring)', e);
      const total = scored.prompt_logprobs.reduce((sum, lp) => sum + lp.token.logprob, 0);
      console.log(`prompt logprobs: ${scored.prompt_logprobs.length} tokens, total ${total.toFixed(3)}`);
      client.Tokenize({ text: request.prompt }, metadata(), { deadline: deadline() }, (te, tokens) => {
        if (te) fail('Tokenize', te);
        console.log(`tokenize: ${tokens.token_ids.length} ids, prompt_tokens ${tokens.prompt_tokens}`);
        const question = { prompt: 'Is the jury out? ', max_tokens: 8, guided_choice: ['yes', 'no'] };
        client.Generate(question, metadata(), { deadline: deadline() }, (ge, answer) => {
          if (ge) fail('Generate (guided)', ge);
          console.log(`guided choice: ${answer.text}`);
          pair();
        });
      });
    });
  });
});

// n = 2 completions of one prompt: unary lists them in `completions`; a
// stream interleaves their messages, each carrying its `index`.
function pair() {
  const two = { prompt: request.prompt, max_tokens: 8, n: 2, temperature: 1, seed: 7 };
  client.Generate(two, metadata(), { deadline: deadline() }, (e, unary) => {
    if (e) fail('Generate (n=2)', e);
    const texts = ['', ''];
    const call = client.GenerateStream(two, metadata(), { deadline: deadline() });
    call.on('data', (m) => { texts[m.index] += m.text; });
    call.on('error', (se) => fail('GenerateStream (n=2)', se));
    call.on('end', () => {
      const same = JSON.stringify(unary.completions.map((c) => c.text)) === JSON.stringify(texts);
      console.log(`n=2: ${unary.completions.length} completions, stream the same: ${same ? 'yes' : 'no'}`);
      client.close();
    });
  });
}
