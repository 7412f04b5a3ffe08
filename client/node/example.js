#!/usr/bin/env node
// Calls mod-server from Node.js: one unary Generate and one GenerateStream,
// then scores the prompt (its log-likelihood), tokenizes it and asks a
// question with guided decoding (the answer one of a list), with @grpc/grpc-js and @grpc/proto-loader (npm install in this folder).
//   node client/node/example.js --server 127.0.0.1:50051
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const server = arg('server', '127.0.0.1:50051');
const protoDir = arg('proto-dir', path.join(__dirname, '..', '..', 'proto'));
const definition = protoLoader.loadSync('modserve/v1/modserve.proto', {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true,
});
const { Generator } = grpc.loadPackageDefinition(definition).modserve.v1;
const client = new Generator(server, grpc.credentials.createInsecure());
const request = { prompt: arg('prompt', 'The jury said '), max_tokens: Number(arg('max-tokens', '32')), return_routes: true };
const deadline = () => new Date(Date.now() + 1000 * Number(arg('timeout', '30')));

function fail(what, err) {
  console.error(`node client: ${what}: ${grpc.status[err.code]}: ${err.details}`);
  process.exit(1);
}

client.Generate(request, { deadline: deadline() }, (err, unary) => {
  if (err) fail('Generate', err);
  console.log(`unary: ${unary.token_ids.length} tokens, finish ${unary.finish_reason}, ` +
              `routed computed ${unary.usage.routed_computed} skipped ${unary.usage.routed_skipped}`);
  console.log(`unary text: ${JSON.stringify(unary.text)}`);
  const texts = [];
  const ids = [];
  let last = null;
  const call = client.GenerateStream(request, { deadline: deadline() });
  call.on('data', (m) => { texts.push(m.text); ids.push(...m.token_ids); last = m; });
  call.on('error', (e) => fail('GenerateStream', e));
  call.on('end', () => {
    console.log(`stream: ${ids.length} tokens in ${texts.length} messages, finish ${last.finish_reason}`);
    console.log(`stream text: ${JSON.stringify(texts.join(''))}`);
    console.log(`same tokens: ${JSON.stringify(ids) === JSON.stringify(unary.token_ids) ? 'yes' : 'no'}`);
    const scoring = { prompt: request.prompt, max_tokens: 1, return_prompt_logprobs: true };
    client.Generate(scoring, { deadline: deadline() }, (e, scored) => {
      if (e) fail('Generate (scoring)', e);
      const total = scored.prompt_logprobs.reduce((sum, lp) => sum + lp.token.logprob, 0);
      console.log(`prompt logprobs: ${scored.prompt_logprobs.length} tokens, total ${total.toFixed(3)}`);
      client.Tokenize({ text: request.prompt }, { deadline: deadline() }, (te, tokens) => {
        if (te) fail('Tokenize', te);
        console.log(`tokenize: ${tokens.token_ids.length} ids, prompt_tokens ${tokens.prompt_tokens}`);
        const question = { prompt: 'Is the jury out? ', max_tokens: 8, guided_choice: ['yes', 'no'] };
        client.Generate(question, { deadline: deadline() }, (ge, answer) => {
          if (ge) fail('Generate (guided)', ge);
          console.log(`guided choice: ${answer.text}`);
          client.close();
        });
      });
    });
  });
});
