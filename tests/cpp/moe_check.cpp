// The MoE layer of every weight format at the ISA tier in use, against an fp64 layer on the original
// weights, without Python: the test driver of the machines whose Python side cannot run here (the
// aarch64 build under qemu-user: scripts/check_aarch64.sh). Per format, decode (M = 1) and prefill
// (M = 130, three chunks of 64), one and two sub-pools: ||out - ref|| / ||ref|| must stay within the
// format's layer_rel_err (FormatTraits: the bound the Python tests hold every tier to).
// Prints one line per case; exits non-zero on a failure. --features: print the CPU line only.
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kt/cpu_features.h"
#include "kt/engine.h"
#include "kt/formats.h"
#include "kt/moe.h"

namespace {

constexpr int kExperts = 8, kTopk = 2, kHidden = 512, kInter = 256;  // whole K-quant super-blocks

struct Weights {
  std::vector<float> gate, up, down;  // [E, I, H], [E, I, H], [E, H, I]
};

Weights random_weights(std::mt19937& rng) {
  Weights w;
  std::normal_distribution<float> n(0.f, 1.f);
  auto fill = [&](std::vector<float>& v, size_t count, float std) {
    v.resize(count);
    for (float& x : v) x = n(rng) * std;
  };
  fill(w.gate, size_t(kExperts) * kInter * kHidden, 1.f / std::sqrt(float(kHidden)));
  fill(w.up, size_t(kExperts) * kInter * kHidden, 1.f / std::sqrt(float(kHidden)));
  fill(w.down, size_t(kExperts) * kHidden * kInter, 1.f / std::sqrt(float(kInter)));
  return w;
}

// out[t] = sum_k w[t,k] * down_e (silu(gate_e x) * (up_e x)), in fp64
std::vector<double> reference(const Weights& w, const std::vector<float>& x, const std::vector<int32_t>& ids,
                              const std::vector<float>& rw, int M) {
  std::vector<double> out(size_t(M) * kHidden, 0.0), h(kInter);
  for (int t = 0; t < M; ++t)
    for (int k = 0; k < kTopk; ++k) {
      const int e = ids[size_t(t) * kTopk + k];
      for (int i = 0; i < kInter; ++i) {
        double g = 0, u = 0;
        const float* gr = &w.gate[(size_t(e) * kInter + i) * kHidden];
        const float* ur = &w.up[(size_t(e) * kInter + i) * kHidden];
        for (int j = 0; j < kHidden; ++j) g += double(gr[j]) * x[size_t(t) * kHidden + j], u += double(ur[j]) * x[size_t(t) * kHidden + j];
        h[i] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int j = 0; j < kHidden; ++j) {
        const float* dr = &w.down[(size_t(e) * kHidden + j) * kInter];
        double y = 0;
        for (int i = 0; i < kInter; ++i) y += double(dr[i]) * h[i];
        out[size_t(t) * kHidden + j] += double(rw[size_t(t) * kTopk + k]) * y;
      }
    }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const kt::CpuFeatures& cpu = kt::cpu_features();
  std::string flags;
  for (const std::string& f : cpu.flags()) flags += " " + f;
  std::printf("moe_check: %s %s, tier %s, flags:%s, sve_vector_bits %d\n", cpu.vendor.c_str(), cpu.brand.c_str(),
              kt::tier_name(kt::active_tier()), flags.c_str(), cpu.sve_vector_bits);
  if (argc > 1 && std::string(argv[1]) == "--features") return 0;
  std::mt19937 rng(1234);
  const Weights w = random_weights(rng);
  std::vector<int64_t> map(kExperts);
  for (int e = 0; e < kExperts; ++e) map[e] = e;
  int failures = 0, cases = 0;
  for (int f = 0; f < kt::kNumFormats; ++f) {
    const kt::FormatTraits& t = kt::format_traits(static_cast<kt::FormatId>(f));
    for (int subpools : {1, 2}) {
      kt::MoeConfig cfg;
      cfg.num_experts = kExperts;
      cfg.topk = kTopk;
      cfg.hidden = kHidden;
      cfg.intermediate = kInter;
      cfg.format = cfg.down_format = t.id;
      cfg.on_cpu.assign(kExperts, 1);
      cfg.chunk_tokens = 64;
      try {
        kt::MoeLayer layer(kt::Engine::shared(2, subpools), cfg);
        layer.load_from_tensors(w.gate.data(), w.up.data(), w.down.data(), kt::DType::f32, map.data(), kExperts);
        for (int M : {1, 130}) {
          std::normal_distribution<float> n(0.f, 1.f);
          std::uniform_int_distribution<int> pick(0, kExperts - 1);
          std::uniform_real_distribution<float> weight(0.1f, 1.f);
          std::vector<float> x(size_t(M) * kHidden), rw(size_t(M) * kTopk);
          std::vector<int32_t> ids(size_t(M) * kTopk);
          for (float& v : x) v = n(rng);
          for (int i = 0; i < M; ++i) {
            ids[size_t(i) * kTopk] = pick(rng);
            ids[size_t(i) * kTopk + 1] = (ids[size_t(i) * kTopk] + 1 + pick(rng) % (kExperts - 1)) % kExperts;
            for (int k = 0; k < kTopk; ++k) rw[size_t(i) * kTopk + k] = weight(rng);
          }
          kt::MoeInputs call;
          call.x = x.data();
          call.x_dtype = kt::DType::f32;
          call.ids = ids.data();
          call.weights = rw.data();
          call.M = M;
          std::shared_ptr<uint16_t> out(new uint16_t[size_t(M) * kHidden], std::default_delete<uint16_t[]>());
          layer.submit(call, out)->wait();
          const std::vector<double> ref = reference(w, x, ids, rw, M);
          double num = 0, den = 0;
          for (size_t i = 0; i < ref.size(); ++i) {
            const double d = double(kt::bf16_to_f32(out.get()[i])) - ref[i];
            num += d * d, den += ref[i] * ref[i];
          }
          const double rel = std::sqrt(num / den);
          const bool ok = rel <= t.layer_rel_err;
          ++cases;
          failures += !ok;
          uint64_t digest = 1469598103934665603ull;  // FNV-1a of the output's bf16 bits
          for (size_t i = 0; i < ref.size(); ++i) digest = (digest ^ out.get()[i]) * 1099511628211ull;
          std::printf("%-4s %-10s subpools %d M %3d: rel err %.4f (bound %.4f) digest %016llx\n", ok ? "ok" : "FAIL",
                      t.name, subpools, M, rel, t.layer_rel_err, static_cast<unsigned long long>(digest));
        }
      } catch (const std::exception& e) {
        ++cases;
        ++failures;
        std::printf("FAIL %-10s subpools %d: %s\n", t.name, subpools, e.what());
      }
    }
  }
  std::printf("moe_check: %d of %d cases failed\n", failures, cases);
  return failures ? 1 : 0;
}
