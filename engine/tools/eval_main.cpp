// mod-eval: bits per byte (predictor and top-k routing), predictor agreement
// and realized compute fraction of a checkpoint on a text file.
#include <cstdio>

#include "engine/checkpoint.h"
#include "engine/evaluator.h"
#include "engine/flags.h"

using namespace modserve;

namespace {

Status Run(int argc, char** argv) {
  Flags f("mod-eval", "Evaluates a modserve checkpoint on a text file.");
  f.Define("model", "", "checkpoint directory");
  f.Define("text", "", "UTF-8 text file to evaluate on");
  f.Define("seq-len", "0", "bytes per window (0: the model's max_context)");
  f.Define("batch", "16", "windows per forward");
  f.Define("max-bytes", "0", "evaluate only the first N bytes (0: all)");
  f.Define("json", "false", "print one JSON object", true);
  MODSERVE_RETURN_IF_ERROR(f.Parse(argc, argv));
  if (f.help_requested()) return Status::Ok();
  if (f.Str("model").empty()) return InvalidArgument("--model is required (a checkpoint directory)");
  if (f.Str("text").empty()) return InvalidArgument("--text is required (a text file)");
  auto model = LoadCheckpoint(f.Str("model"));
  if (!model.ok()) return model.status();
  auto text = TokenCorpus::FromFile(f.Str("text"), (*model)->config().bos_id);
  if (!text.ok()) return text.status();
  EvalOptions o;
  int64_t seq = 0;
  MODSERVE_RETURN_IF_ERROR(f.Get("seq-len", &seq));
  MODSERVE_RETURN_IF_ERROR(f.Get("batch", &o.batch));
  MODSERVE_RETURN_IF_ERROR(f.Get("max-bytes", &o.max_bytes));
  const int64_t ctx = (*model)->config().max_context;
  o.seq_len = seq == 0 ? ctx : seq;
  if (o.seq_len < 1 || o.seq_len > ctx) return InvalidArgument("--seq-len must be in [1, max_context=" + std::to_string(ctx) + "]");
  if (o.batch < 1) return InvalidArgument("--batch must be >= 1");
  EvalResult r = Evaluate(*model, *text, o);
  if (f.Bool("json")) {
    std::printf("%s\n", r.ToJson().dump().c_str());
    return Status::Ok();
  }
  std::printf("bytes                     %lld\n", static_cast<long long>(r.bytes));
  std::printf("bits/byte (predictor)     %.4f\n", r.bits_per_byte);
  std::printf("bits/byte (top-k)         %.4f\n", r.bits_per_byte_topk);
  std::printf("predictor routing cost    %+.2f%%\n", 100.0 * (r.bits_per_byte / r.bits_per_byte_topk - 1.0));
  for (size_t i = 0; i < r.routed_layers.size(); ++i) {
    std::printf("layer %-3lld                 agreement %.4f  compute fraction %.4f\n", static_cast<long long>(r.routed_layers[i]),
                r.predictor_agreement[i], r.compute_fraction[i]);
  }
  std::printf("mean predictor agreement  %.4f\n", r.mean_predictor_agreement);
  std::printf("mean compute fraction     %.4f\n", r.mean_compute_fraction);
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) { return RunToolMain("mod-eval", argc, argv, Run); }
