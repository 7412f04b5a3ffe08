#!/usr/bin/python3
"""Calls mod-server from Python: one unary Generate and one GenerateStream, then n=2, scoring, tokenizing and guiding.

Uses Debian's python3-grpcio and python3-protobuf; generate the stubs from
proto/ first (tests/clients_test.sh does exactly this):
    protoc -I proto --python_out=OUT --grpc_out=OUT \
        --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin modserve/v1/modserve.proto
    PYTHONPATH=OUT /usr/bin/python3 client/python/example.py --server 127.0.0.1:50051
Against a server with TLS and a bearer token: --tls-ca CA.pem --token-file TOKEN.
"""
import argparse
import sys

import grpc
from modserve.v1 import modserve_pb2, modserve_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--prompt", default="The jury said ")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds")
    parser.add_argument("--tls-ca", help="CA bundle (PEM) that signed the server's certificate: connect with TLS")
    parser.add_argument("--token-file", help="file holding the bearer token (the server's auth_token_file)")
    args = parser.parse_args()

    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(root_certificates=f.read()))
    else:
        channel = grpc.insecure_channel(args.server)
    metadata = []
    if args.token_file:
        with open(args.token_file, encoding="ascii") as f:
            metadata.append(("authorization", "Bearer " + f.read().strip()))
    call = {"timeout": args.timeout, "metadata": metadata}  # every call: a deadline, and the token if any

    with channel:
        stub = modserve_pb2_grpc.GeneratorStub(channel)
        request = modserve_pb2.GenerateRequest(prompt=args.prompt, max_tokens=args.max_tokens, return_routes=True)
        try:
            unary = stub.Generate(request, **call)
            streamed_text, streamed_ids, last = [], [], None
            for message in stub.GenerateStream(request, **call):
                streamed_text.append(message.text)
                streamed_ids.extend(message.token_ids)
                last = message
            # n = 2 completions of one prompt: unary lists them in `completions`;
            # a stream interleaves their messages, each carrying its `index`.
            pair = modserve_pb2.GenerateRequest(prompt=args.prompt, max_tokens=8, n=2, temperature=1.0, seed=7)
            unary_pair = stub.Generate(pair, **call)
            pair_texts = {}
            for message in stub.GenerateStream(pair, **call):
                pair_texts[message.index] = pair_texts.get(message.index, "") + message.text
            # Scoring: the prompt's log-likelihood under the model (one token to generate).
            scored = stub.Generate(modserve_pb2.GenerateRequest(prompt=args.prompt, max_tokens=1,
                                                                return_prompt_logprobs=True), **call)
            tokens = stub.Tokenize(modserve_pb2.TokenizeRequest(text=args.prompt), **call)
            # Guided decoding: the answer is one of the choices.
            answer = stub.Generate(modserve_pb2.GenerateRequest(prompt="Is the jury out? ", max_tokens=8,
                                                                guided_choice=["yes", "no"]), **call)
        except grpc.RpcError as e:
            print(f"python client: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    finish = modserve_pb2.FinishReason.Name(unary.finish_reason)
    print(f"unary: {len(unary.token_ids)} tokens, finish {finish}, "
          f"routed computed {unary.usage.routed_computed} skipped {unary.usage.routed_skipped}")
    print(f"unary text: {unary.text!r}")
    print(f"stream: {len(streamed_ids)} tokens in {len(streamed_text)} messages, "
          f"finish {modserve_pb2.FinishReason.Name(last.finish_reason)}")
    print(f"stream text: {''.join(streamed_text)!r}")
    print("same tokens: " + ("yes" if list(unary.token_ids) == streamed_ids else "no"))
    unary_texts = [c.text for c in unary_pair.completions]
    streamed_pair = [pair_texts.get(i, "") for i in range(2)]
    print(f"n=2: {len(unary_texts)} completions, stream the same: {'yes' if unary_texts == streamed_pair else 'no'}")
    total = sum(lp.token.logprob for lp in scored.prompt_logprobs)
    print(f"prompt logprobs: {len(scored.prompt_logprobs)} tokens, total {total:.3f}")
    print(f"tokenize: {len(tokens.token_ids)} ids, prompt_tokens {tokens.prompt_tokens}")
    print(f"guided choice: {answer.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
