// The MoE layer of every weight format at the ISA tier in use, against an fp64 layer on the original
// weights, without Python: the test driver of the machines whose Python side cannot run here (the
// aarch64 build under qemu-user: scripts/check_aarch64.sh). Per format, decode (M = 1) and prefill
// (M = 130, three chunks of 64), one and two sub-pools: ||out - ref|| / ||ref|| must stay within the
// format's layer_rel_err (FormatTraits: the bound the Python tests hold every tier to).
// Above the generic tier, each case also runs on the generic tier's kernels and the two outputs must
// agree within kVsGeneric. Prints one line per case, with the layer's kernel rows (a tile row / the vector row below its
// min_m; the tier forced by KT_KERNEL_ISA picks them);
// exits non-zero on a failure. --features: print the CPU line only. --probes: run each machine-limit
// probe the active tier has (cpp/src/probe: under qemu only that it runs, not its rate). --formats a,b: only those
// formats (by name). --own-rows: only the formats whose layer runs a kernel row of the active tier
// (not one of a lower tier it falls back to).
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kt/cpu_features.h"
#include "kt/engine.h"
#include "kt/formats.h"
#include "kt/kernels.h"
#include "kt/moe.h"
#include "probe/probe.h"

namespace {

constexpr int kExperts = 8, kTopk = 2, kHidden = 512, kInter = 256;  // whole K-quant super-blocks
// A tier's output against the generic tier's on the same weights (relative L2 difference): one bf16
// ulp of the outputs (2^-7 relative, the outputs' own rounding), where fp32 rounding-order
// differences stay orders of magnitude below it.
constexpr double kVsGeneric = 1.0 / 128;

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
  const char* tier;
  try {
    tier = kt::tier_name(kt::active_tier());  // a tier KT_KERNEL_ISA forces that this CPU lacks throws
  } catch (const std::exception& e) {
    std::printf("moe_check: %s\n", e.what());
    return 3;
  }
  std::printf("moe_check: %s %s, tier %s, flags:%s, sve_vector_bits %d\n", cpu.vendor.c_str(), cpu.brand.c_str(), tier,
              flags.c_str(), cpu.sve_vector_bits);
  if (argc > 1 && std::string(argv[1]) == "--features") return 0;
  if (argc > 1 && std::string(argv[1]) == "--probes") {
    const kt::probe::BandwidthResult bw = kt::probe::measure_bandwidth(1, 4, 1, false);
    std::printf("probe read_sum: %s loads, %.2f GB/s\n", bw.loads.c_str(), bw.best_gbps);
    int ran = 0;
    for (const kt::probe::PeakResult& p : kt::probe::measure_peaks(1, 0.03, false, {}).families) {
      std::printf("probe %-14s %-20s %s\n", p.name.c_str(), p.instruction.c_str(),
                  p.available ? (std::to_string(p.ops_per_instruction) + " ops/instruction, ran").c_str() : p.reason.c_str());
      ran += p.available;
    }
    std::printf("moe_check: %d probe families ran\n", ran);
    return 0;
  }
  std::string only;  // ",a,b," or empty: every format
  bool own_rows = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--formats" && i + 1 < argc) only = "," + std::string(argv[++i]) + ",";
    else if (arg == "--own-rows") own_rows = true;
    else return std::fprintf(stderr, "moe_check: unknown argument %s\n", arg.c_str()), 2;
  }
  std::mt19937 rng(1234);
  const Weights w = random_weights(rng);
  std::vector<int64_t> map(kExperts);
  for (int e = 0; e < kExperts; ++e) map[e] = e;
  int failures = 0, cases = 0;
  for (int f = 0; f < kt::kNumFormats; ++f) {
    const kt::FormatTraits& t = kt::format_traits(static_cast<kt::FormatId>(f));
    if (!only.empty() && only.find("," + std::string(t.name) + ",") == std::string::npos) continue;
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
        if (own_rows && kt::row_tier(layer.kernel().needs) != kt::active_tier()) break;
        layer.load_from_tensors(w.gate.data(), w.up.data(), w.down.data(), kt::DType::f32, map.data(), kExperts);
        // Above the generic tier, the same layer on the generic tier's kernels too: the same quantized
        // weights (ARM has only the reference quantizers), so the two outputs differ only by the
        // kernels' fp32 rounding order and, where a row reads another activation format, its rounding.
        std::unique_ptr<kt::MoeLayer> generic;
        if (kt::active_tier() != kt::IsaTier::generic) {
          const std::string forced = kt::isa_override();
          kt::set_isa_override("generic");
          generic = std::make_unique<kt::MoeLayer>(kt::Engine::shared(2, subpools), cfg);
          kt::set_isa_override(forced);
          generic->load_from_tensors(w.gate.data(), w.up.data(), w.down.data(), kt::DType::f32, map.data(), kExperts);
        }
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
          bool ok = rel <= t.layer_rel_err;
          std::string vs_generic;
          if (generic) {
            std::shared_ptr<uint16_t> want(new uint16_t[size_t(M) * kHidden], std::default_delete<uint16_t[]>());
            generic->submit(call, want)->wait();
            double dn = 0, dd = 0;
            for (size_t i = 0; i < ref.size(); ++i) {
              const double a = kt::bf16_to_f32(out.get()[i]), b = kt::bf16_to_f32(want.get()[i]);
              dn += (a - b) * (a - b), dd += b * b;
            }
            const double diff = std::sqrt(dn / dd);
            ok = ok && diff <= kVsGeneric;
            char buf[64];
            std::snprintf(buf, sizeof buf, " vs generic %.5f", diff);
            vs_generic = buf;
          }
          ++cases;
          failures += !ok;
          uint64_t digest = 1469598103934665603ull;  // FNV-1a of the output's bf16 bits
          for (size_t i = 0; i < ref.size(); ++i) digest = (digest ^ out.get()[i]) * 1099511628211ull;
          std::printf("%-4s %-10s subpools %d M %3d: rel err %.4f (bound %.4f)%s digest %016llx %s\n", ok ? "ok" : "FAIL",
                      t.name, subpools, M, rel, t.layer_rel_err, vs_generic.c_str(), static_cast<unsigned long long>(digest),
                      (std::string(layer.kernel().name) +
                       (layer.kernel().min_m ? std::string(" / ") + layer.vector_kernel().name : "")).c_str());
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
