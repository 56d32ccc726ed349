// CondConv on CPU for the inference form (cc_models/cpu_kernels.py builds and calls these): the depthwise
// convolution, the pointwise one (AVX-512 builds), and the bias + SiLU epilogue of the batched-product form.
//
// timm folds the batch into the channels and runs one grouped convolution of per-sample kernels materialised by
// the routing; on CPU that copies a channels_last input to NCHW and runs oneDNN's grouped path, 2-2.6x the time of
// the same layer with one shared kernel (B0, batch 32, 2 threads). Here each sample's kernel is mixed from the
// experts into a small buffer that stays in cache, and convolved straight from the channels_last input, with the
// bias and SiLU applied in registers before the store. Numerics: float32 throughout, sums in tap order, SiLU from
// a polynomial exp (~1 ulp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <algorithm>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <utility>

// Timing builds (python -m bench.expert_bound --split) compile this file again under another op namespace with the
// pointwise kernel's mixes or GEMMs left out, to time each part inside the whole model; their outputs are garbage.
#ifndef CC_CONDCONV_NS
#define CC_CONDCONV_NS cc_condconv
#endif
#define CC_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)  // expands CC_CONDCONV_NS before TORCH_LIBRARY pastes it
#define CC_LIBRARY_IMPL(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)

namespace {

// A kernel's scratch buffer (a mixed kernel or panel), uninitialised, on a cache-line boundary. A std::vector's
// malloc'ed storage is 16-byte aligned: where it is not also 64-byte aligned every vector load from it straddles two
// lines, and which it is depends on the heap's state (the same layer's buffer came 0 or 16 bytes off a line in one
// process). Held 16 bytes off a line, the buffer cost B0's pointwise CondConvs 5-17% of their time (b0_4e, batch 32).
class ScratchFloats {
 public:
  explicit ScratchFloats(int64_t n)
      : ptr_(static_cast<float*>(std::aligned_alloc(64, std::max<int64_t>(1, (n * int64_t{sizeof(float)} + 63) / 64) * 64)), &std::free) {
    TORCH_CHECK(ptr_ != nullptr, "out of memory for a scratch buffer of ", n, " floats");
  }
  float* data() const { return ptr_.get(); }

 private:
  std::unique_ptr<float, decltype(&std::free)> ptr_;
};

// mixed[t, c] = sum_e r[e] * experts[e, t, c] for channels [c_lo, c_hi): the experts as [E, kh*kw, C] (see
// depthwise's wrapper), so the mix is E contiguous passes over a buffer that stays in L1/L2.
void mix_depthwise(const float* experts, const float* r, int64_t E, int64_t C, int64_t kk, int64_t c_lo, int64_t c_hi,
                   float* mixed) {
  for (int64_t t = 0; t < kk; ++t) {
    float* m = mixed + t * C;
    const float* w0 = experts + t * C;
    for (int64_t c = c_lo; c < c_hi; ++c) m[c] = r[0] * w0[c];
    for (int64_t e = 1; e < E; ++e) {
      const float re = r[e];
      const float* w = experts + e * kk * C + t * C;
      for (int64_t c = c_lo; c < c_hi; ++c) m[c] += re * w[c];
    }
  }
}

// 16 floats: one AVX-512 register, two AVX2 ones; GCC lowers the arithmetic for whatever -march allows.
typedef float v16 __attribute__((vector_size(64)));
constexpr int64_t L = 16;
inline v16 loadu(const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; }
inline void storeu(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

alignas(64) const float kZeros[L] = {};

typedef int32_t i16v __attribute__((vector_size(64)));

// expf on 16 lanes (Cephes' polynomial, ~1 ulp), then SiLU = v / (1 + exp(-v)): in registers, before the store.
__attribute__((always_inline)) inline v16 exp16(v16 x) {
  const v16 hi = v16{} + 88.3762626647949f, lo = v16{} - 88.3762626647949f;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const v16 magic = v16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  v16 t = x * 1.44269504088896341f + magic;
  i16v n = (i16v)t - (i16v)magic;  // a vector cast reinterprets the bits
  v16 fn = t - magic;
  x = x - fn * 0.693359375f - fn * -2.12194440e-4f;
  v16 y = v16{} + 1.9875691500E-4f;
  y = y * x + 1.3981999507E-3f;
  y = y * x + 8.3334519073E-3f;
  y = y * x + 4.1665795894E-2f;
  y = y * x + 1.6666665459E-1f;
  y = y * x + 5.0000001201E-1f;
  y = y * (x * x) + x + 1.0f;
  i16v e = (n + 127) << 23;
  return y * (v16)e;
}
__attribute__((always_inline)) inline v16 silu16(v16 v) { return v / (1.0f + exp16(-v)); }
inline float silu1(float v) { return v / (1.0f + std::exp(-v)); }

// P adjacent output pixels of one row, channels [c0, c0 + 16): each tap's weights are loaded once for the P
// pixels, whose sums stay in registers. Checked: some pixel has taps left or right of the input (read as zeros).
template <int P, bool Checked>
inline void dw_block(const float* x, const float* w, const float* bias, float* out, int64_t W, int64_t C,
                     int64_t kw, int64_t stride, int64_t i_lo, int64_t i_hi, int64_t ih0, int64_t iw0, int64_t c0,
                     bool silu) {
  v16 acc[P];
  const v16 bv = bias ? loadu(bias + c0) : v16{};
  for (int p = 0; p < P; ++p) acc[p] = bv;
  for (int64_t i = i_lo; i < i_hi; ++i) {
    const float* xr = x + (ih0 + i) * W * C + c0;
    const float* wr = w + i * kw * C + c0;
    for (int64_t j = 0; j < kw; ++j) {
      const v16 wv = loadu(wr + j * C);
      for (int p = 0; p < P; ++p) {
        const int64_t iw = iw0 + p * stride + j;
        // a padding tap reads zeros: a select, not a branch, in the inner loop
        const float* src = !Checked || static_cast<uint64_t>(iw) < static_cast<uint64_t>(W) ? xr + iw * C : kZeros;
        acc[p] += loadu(src) * wv;
      }
    }
  }
  for (int p = 0; p < P; ++p) storeu(out + p * C + c0, silu ? silu16(acc[p]) : acc[p]);
}

// Channels [c0, c0 + 16) of one sample's depthwise conv, NHWC, output rows [oh_begin, oh_end). x: the sample's
// [H, W, C]; w: its [kh*kw, C]; out: its [Ho, Wo, C]. The rows' slice of the input for the block (a few KiB) stays in
// L1 while every output pixel reads it. Taps outside the input are the zero padding: rows skipped,
// columns read as zeros.
inline void dw_channels(const float* x, const float* w, const float* bias, float* out, int64_t H, int64_t W,
                        int64_t C, int64_t kh, int64_t kw, int64_t stride, int64_t pad_t, int64_t pad_l,
                        int64_t Ho, int64_t Wo, int64_t c0, bool silu, int64_t oh_begin, int64_t oh_end) {
  // Pixels per block: 7 where rows are a multiple of 7 (B0/B1's 7x7 and 14x14 maps: no short block), else 8.
  const int P = Wo % 7 == 0 ? 7 : 8;
  for (int64_t oh = oh_begin; oh < oh_end; ++oh) {
    const int64_t ih0 = oh * stride - pad_t;
    const int64_t i_lo = std::max<int64_t>(0, -ih0), i_hi = std::min<int64_t>(kh, H - ih0);
    float* orow = out + oh * Wo * C;
    auto block = [&](auto p_const, int64_t ow) {
      constexpr int Q = decltype(p_const)::value;
      const int64_t iw0 = ow * stride - pad_l;
      if (iw0 < 0 || iw0 + (Q - 1) * stride + kw > W)
        dw_block<Q, true>(x, w, bias, orow + ow * C, W, C, kw, stride, i_lo, i_hi, ih0, iw0, c0, silu);
      else
        dw_block<Q, false>(x, w, bias, orow + ow * C, W, C, kw, stride, i_lo, i_hi, ih0, iw0, c0, silu);
    };
    for (int64_t ow = 0; ow < Wo; ow += P) {
      switch (std::min<int64_t>(P, Wo - ow)) {
        case 8: block(std::integral_constant<int, 8>{}, ow); break;
        case 7: block(std::integral_constant<int, 7>{}, ow); break;
        case 6: block(std::integral_constant<int, 6>{}, ow); break;
        case 5: block(std::integral_constant<int, 5>{}, ow); break;
        case 4: block(std::integral_constant<int, 4>{}, ow); break;
        case 3: block(std::integral_constant<int, 3>{}, ow); break;
        case 2: block(std::integral_constant<int, 2>{}, ow); break;
        default: block(std::integral_constant<int, 1>{}, ow); break;
      }
    }
  }
}

// Channels [c_begin, C) (fewer than 16), one at a time.
inline void dw_channels_tail(const float* x, const float* w, const float* bias, float* out, int64_t H, int64_t W,
                             int64_t C, int64_t kh, int64_t kw, int64_t stride, int64_t pad_t, int64_t pad_l,
                             int64_t Ho, int64_t Wo, int64_t c_begin, bool silu) {
  for (int64_t oh = 0; oh < Ho; ++oh)
    for (int64_t ow = 0; ow < Wo; ++ow)
      for (int64_t c = c_begin; c < C; ++c) {
        float acc = bias ? bias[c] : 0.f;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t ih = oh * stride - pad_t + i;
          if (ih < 0 || ih >= H) continue;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t iw = ow * stride - pad_l + j;
            if (iw >= 0 && iw < W) acc += x[(ih * W + iw) * C + c] * w[(i * kw + j) * C + c];
          }
        }
        out[(oh * Wo + ow) * C + c] = silu ? silu1(acc) : acc;
      }
}

// Channel blocks [blk0, blk1) of one sample (the last block may be the tail of fewer than 16 channels).
inline void dw_sample(const float* x, const float* w, const float* bias, float* out, int64_t H, int64_t W,
                      int64_t C, int64_t kh, int64_t kw, int64_t stride, int64_t pad_t, int64_t pad_l, int64_t Ho,
                      int64_t Wo, int64_t blk0, int64_t blk1, bool silu, const float* next = nullptr) {
  // A channel block reads one 64-byte line every C floats, a pattern the hardware prefetchers do not follow
  // from memory: the next sample's input is prefetched into L2 in slices, one per block, while this one runs.
  const int64_t lines = H * W * C / L, per_block = (lines + (blk1 - blk0) - 1) / std::max<int64_t>(1, blk1 - blk0);
  // Two output rows at a time across all the channel blocks, then the next two: on B0's 14x14 layers at batch 32
  // 0.8-0.9x the time of one channel block over the whole map (1-row and 4-row bands: no better; 7x7: even).
  constexpr int64_t band = 2;
  for (int64_t oh0 = 0; oh0 < Ho; oh0 += band) {
    const int64_t oh1 = std::min(Ho, oh0 + band);
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      if (next && oh0 == 0)
        for (int64_t k = (blk - blk0) * per_block, e = std::min(lines, k + per_block); k < e; ++k)
          __builtin_prefetch(next + k * L, 0, 2);
      const int64_t c0 = blk * L;
      if (c0 + L <= C)
        dw_channels(x, w, bias, out, H, W, C, kh, kw, stride, pad_t, pad_l, Ho, Wo, c0, silu, oh0, oh1);
      else
        dw_channels_tail(x, w, bias, out, H, W, C, kh, kw, stride, pad_t, pad_l, Ho, Wo, c0, silu);
    }
  }
}

// The optional bias, contiguous: shared [N] or per sample [B, N]; undefined when absent.
at::Tensor checked_bias(const c10::optional<at::Tensor>& bias_opt, int64_t B, int64_t N, const char* op) {
  if (!bias_opt.has_value() || !bias_opt->defined()) return at::Tensor();
  at::Tensor bias = bias_opt->contiguous();
  TORCH_CHECK(bias.scalar_type() == at::kFloat && ((bias.dim() == 1 && bias.size(0) == N) ||
              (bias.dim() == 2 && bias.size(0) == B && bias.size(1) == N)),
              op, ": bias must be a float32 [", N, "] or [", B, ", ", N, "] tensor");
  return bias;
}

// The routing weights, contiguous [B, E].
at::Tensor checked_routing(const at::Tensor& routing, int64_t B, int64_t E, const char* op) {
  at::Tensor r = routing.contiguous();
  TORCH_CHECK(r.dim() == 2 && r.scalar_type() == at::kFloat && r.size(0) == B && r.size(1) == E,
              op, ": routing must be a float32 [B, E] tensor");
  return r;
}

// x: [B, C, H, W] channels_last; experts [E, kh*kw*C] (each expert's taps outermost); routing [B, E];
// bias [C] (shared) or [B, C] (per sample) or none; output [B, C, Ho, Wo] channels_last. Padding: pad_t rows above
// and pad_l columns left of the input, and as many below and right as Ho, Wo need (TF SAME's asymmetric kind too).
at::Tensor depthwise(const at::Tensor& x, const at::Tensor& experts, const at::Tensor& routing,
                     const c10::optional<at::Tensor>& bias_opt, int64_t kh, int64_t kw, int64_t stride,
                     int64_t pad_t, int64_t pad_l, int64_t Ho, int64_t Wo, bool silu) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "depthwise: x must be a float32 channels_last [B, C, H, W] tensor");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), E = experts.size(0), kk = kh * kw;
  TORCH_CHECK(experts.dim() == 2 && experts.scalar_type() == at::kFloat && experts.is_contiguous() &&
              experts.size(1) == C * kk, "depthwise: experts must be a contiguous float32 [E, kh*kw*C] tensor");
  const at::Tensor r = checked_routing(routing, B, E, "depthwise");
  TORCH_CHECK(kh > 0 && kw > 0 && stride > 0 && pad_t >= 0 && pad_l >= 0 && Ho > 0 && Wo > 0,
              "depthwise: kernel, stride, output size must be positive and padding non-negative");
  const at::Tensor bias = checked_bias(bias_opt, B, C, "depthwise");
  const bool bias_per_sample = bias.defined() && bias.dim() == 2;
  at::Tensor out = at::empty({B, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* xp = x.data_ptr<float>();
  const float* ep = experts.data_ptr<float>();
  const float* rp = r.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const int64_t blocks = (C + L - 1) / L;
  // Work items (sample, channel block), split between the threads in contiguous runs: at batch 32 on 2 threads a
  // thread takes 16 whole samples, at batch 1 half of the channel blocks, at batch 3 one and a half samples. A
  // thread mixes only the channels of its run, once per sample, into a buffer that stays in cache.
  at::parallel_for(0, B * blocks, 1, [&](int64_t i0, int64_t i1) {
    ScratchFloats w(kk * C);
    for (int64_t i = i0; i < i1;) {
      const int64_t b = i / blocks, blk0 = i % blocks, blk1 = std::min(blocks, blk0 + (i1 - i));
      const bool whole = blk0 == 0 && blk1 == blocks;
      mix_depthwise(ep, rp + b * E, E, C, kk, blk0 * L, std::min(C, blk1 * L), w.data());
      const float* bb = bp ? (bias_per_sample ? bp + b * C : bp) : nullptr;
      if (whole && i == i0)  // the first whole sample of this run: nothing prefetched it
        for (int64_t k = 0; k < H * W * C; k += L) __builtin_prefetch(xp + b * H * W * C + k, 0, 2);
      i += blk1 - blk0;
      const bool next_whole = whole && i + blocks <= i1;  // the next sample is this run's too, all of it
      dw_sample(xp + b * H * W * C, w.data(), bb, op + b * Ho * Wo * C, H, W, C, kh, kw, stride, pad_t, pad_l,
                Ho, Wo, blk0, blk1, silu, next_whole ? xp + (b + 1) * H * W * C : nullptr);
    }
  });
  return out;
}

// A CondConv block's routing: out[b, e] = sigmoid(bias[e] + scale * sum_c W[e, c] * sum_m x[b, m, c]), the mean
// over pixels (scale = 1 / pixels) through the routing's linear layer, from a channels_last input in one pass.
// PyTorch's form is four ops on a few KiB (a sum over the pixels, a transpose, addmm, sigmoid): at batch 1 their
// calls, not their arithmetic, cost about 65-85 us per block. Sums in pixel order per channel; expf from libm.
at::Tensor routing(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double scale) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "routing: x must be a float32 channels_last [B, C, H, W] tensor");
  const int64_t B = x.size(0), C = x.size(1), M = x.size(2) * x.size(3);
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.size(1) == C,
              "routing: weight must be a contiguous float32 [E, ", C, "] tensor");
  const int64_t E = weight.size(0);
  TORCH_CHECK(bias.dim() == 1 && bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.size(0) == E,
              "routing: bias must be a contiguous float32 [", E, "] tensor");
  at::Tensor out = at::empty({B, E}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float s = static_cast<float>(scale);
  // Threads only for samples of 64K floats and more: below that their wake-up costs more than the pass.
  at::parallel_for(0, B, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, M * C)),
                   [&](int64_t b0, int64_t b1) {
    ScratchFloats pooled(C);
    float* sum = pooled.data();
    for (int64_t b = b0; b < b1; ++b) {
      const float* xb = xp + b * M * C;
      std::fill(sum, sum + C, 0.f);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < C; ++c) sum[c] += xb[m * C + c];
      for (int64_t e = 0; e < E; ++e) {
        float dot = 0.f;
        for (int64_t c = 0; c < C; ++c) dot += wp[e * C + c] * sum[c];
        op[b * E + e] = 1.0f / (1.0f + std::exp(-(bp[e] + s * dot)));
      }
    }
  });
  return out;
}

#if defined(__AVX512F__)
// The pointwise CondConv: out[b] = x[b] @ (g[b] * sum_e r[b, e] W_e), x[b] the sample's channels_last [M, K] pixels,
// g[b] an optional per-input-channel scale (the SE gate before the projection: scaling the kernel's rows costs a
// multiply per row where scaling the input is a pass over it). The batched-product form writes every sample's
// mixed [K, N] kernel to memory and reads it back (B*K*N floats: 47 MB for B0's 1152->320 at batch 32); here a
// sample's kernel is mixed 48 columns at a time into a panel that stays in L2, the packing step of a GEMM whose
// micro-kernel keeps MR x 48 sums in registers (21-24 of the 32 AVX-512 registers; AVX2's 16 would spill them,
// hence AVX-512 builds only) with bias and SiLU applied before the store.
constexpr int64_t kPanelVectors = 3, kPanel = kPanelVectors * L;  // panel width: 48 output channels
constexpr int64_t kGroupPanelFloats = 64 * 1024;  // a group's mixed panels for one range of input channels: 256 KiB

// Panel j's first vector of 16 output channels and its width in vectors: 3 each, except that a lone last vector
// (3, 3, 1) becomes two panels of 2 (3, 2, 2): every panel is a pass over the sample's input, and a pass for 16
// channels ran 0.75x the batched product on B0's 672->112 (cpu_kernels.panel_spans is the same rule).
inline void panel_span(int64_t nvec, int64_t panels, int64_t j, int64_t& v0, int64_t& nv) {
  v0 = j * kPanelVectors;
  nv = std::min(kPanelVectors, nvec - v0);
  if (nvec % kPanelVectors == 1 && panels >= 2 && j >= panels - 2) {
    v0 = (panels - 2) * kPanelVectors + (j - (panels - 2)) * 2;
    nv = 2;
  }
}

// MR output pixels x NV*16 channels of one sample over input channels [k0, k0 + kn): a points at the first pixel's
// channel k0 (pixel rows lda apart), p at the panel's [kn, 48] rows. The sums start from the bias on the first
// range and from the stored partial sums after it; the last range applies SiLU before the store.
template <int MR, int NV, bool kWhole>
__attribute__((always_inline)) inline void pw_block(const float* a, int64_t lda, int64_t kn, const float* p,
                                                    const float* bias, float* out, int64_t N, bool first, bool last,
                                                    bool silu) {
  if constexpr (kWhole) {  // all K rows: the pixel rows are kn apart, and no partial sums
    first = last = true;
    lda = kn;
  }
  v16 acc[MR][NV];
  if (first) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const v16 bv = bias ? loadu(bias + v * L) : v16{};
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) acc[m][v] = bv;
    }
  } else {
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = loadu(out + m * N + v * L);
  }
  for (int64_t k = 0; k < kn; ++k) {
    v16 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = loadu(p + k * kPanel + v * L);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const float av = a[m * lda + k];  // a scalar operand: a broadcast load folded into the FMAs
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] += av * bv[v];
    }
  }
  const bool act = last && silu;
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) storeu(out + m * N + v * L, act ? silu16(acc[m][v]) : acc[m][v]);
}

// All M pixels against one panel (one range of input channels): blocks of 7 pixels where M is a multiple of 7
// (B0/B1's 7x7 and 14x14 maps), else of 8, then single pixels.
template <int NV, bool kWhole>
void pw_panel(const float* a, int64_t lda, int64_t M, int64_t kn, const float* p, const float* bias, float* out,
              int64_t N, bool first, bool last, bool silu) {
  if constexpr (kWhole) lda = kn;
  int64_t m = 0;
  if (M % 7 == 0)
    for (; m < M; m += 7) pw_block<7, NV, kWhole>(a + m * lda, lda, kn, p, bias, out + m * N, N, first, last, silu);
  else
    for (; m + 8 <= M; m += 8)
      pw_block<8, NV, kWhole>(a + m * lda, lda, kn, p, bias, out + m * N, N, first, last, silu);
  for (; m < M; ++m) pw_block<1, NV, kWhole>(a + m * lda, lda, kn, p, bias, out + m * N, N, first, last, silu);
}

// One panel of one sample over one range of input channels; the whole range (every ungrouped layer) without the
// partial-sum branches.
template <int NV>
void pw_range(const float* a, int64_t lda, int64_t M, int64_t kn, const float* p, const float* bias, float* out,
              int64_t N, bool first, bool last, bool silu) {
  if (first && last)
    pw_panel<NV, true>(a, lda, M, kn, p, bias, out, N, true, true, silu);
  else
    pw_panel<NV, false>(a, lda, M, kn, p, bias, out, N, first, last, silu);
}

// panel[k, :nv*16] = gate[k] * sum_e r[e] * experts[k, e, :nv*16] for one sample; experts: the panel's [K, E, 48]
// slice from the range's first row, read as one contiguous stream. E is a template argument for the model's 4 and
// 8 experts (routing in registers).
template <int E>
void mix_panel_e(const float* experts, const float* r, const float* gate, int64_t kn, int64_t nv, float* panel) {
  v16 rv[E];
#pragma GCC unroll 8
  for (int e = 0; e < E; ++e) rv[e] = v16{} + r[e];
  for (int64_t k = 0; k < kn; ++k) {
    const float* w = experts + k * E * kPanel;
    for (int64_t c = 0; c < nv * L; c += L) {
      v16 s = rv[0] * loadu(w + c);
#pragma GCC unroll 8
      for (int e = 1; e < E; ++e) s += rv[e] * loadu(w + e * kPanel + c);
      storeu(panel + k * kPanel + c, gate ? s * gate[k] : s);
    }
  }
}

// The same for the G samples s of a group (panels [G, kn, 48]; r [G, E]; gate rows ldg apart): each expert vector
// is loaded once for all G, so the experts are read once per group rather than once per sample. The G*E routing
// weights stay scalars in a local array, broadcast by the FMAs' memory operands.
template <int G, int E>
void mix_group_e(const float* __restrict experts, const float* __restrict r, const float* __restrict gate,
                 int64_t ldg, int64_t kn, int64_t nv, float* __restrict panels) {
  float rs[G * E];
  for (int i = 0; i < G * E; ++i) rs[i] = r[i];
  for (int64_t k = 0; k < kn; ++k) {
    const float* w = experts + k * E * kPanel;
    for (int64_t c = 0; c < nv * L; c += L) {
      v16 s[G];
      const v16 w0 = loadu(w + c);
#pragma GCC unroll 8
      for (int j = 0; j < G; ++j) s[j] = rs[j * E] * w0;
#pragma GCC unroll 8
      for (int e = 1; e < E; ++e) {
        const v16 we = loadu(w + e * kPanel + c);
#pragma GCC unroll 8
        for (int j = 0; j < G; ++j) s[j] += rs[j * E + e] * we;
      }
#pragma GCC unroll 8
      for (int j = 0; j < G; ++j) storeu(panels + (j * kn + k) * kPanel + c, gate ? s[j] * gate[j * ldg + k] : s[j]);
    }
  }
}

template <int E>
void mix_panels_g(int64_t g, const float* experts, const float* r, const float* gate, int64_t ldg, int64_t kn,
                  int64_t nv, float* panels) {
  switch (g) {
    case 8: return mix_group_e<8, E>(experts, r, gate, ldg, kn, nv, panels);
    case 4: return mix_group_e<4, E>(experts, r, gate, ldg, kn, nv, panels);
    case 2: return mix_group_e<2, E>(experts, r, gate, ldg, kn, nv, panels);
    case 1: return mix_panel_e<E>(experts, r, gate, kn, nv, panels);
  }
  for (int64_t j = 0; j < g;) {  // a group's remainder: the sizes above, largest first
    const int64_t h = g - j >= 8 ? 8 : g - j >= 4 ? 4 : g - j >= 2 ? 2 : 1;
    mix_panels_g<E>(h, experts, r + j * E, gate ? gate + j * ldg : nullptr, ldg, kn, nv, panels + j * kn * kPanel);
    j += h;
  }
}

// The generic expert count (neither 4 nor 8): one sample at a time.
void mix_panels_any(int64_t g, const float* experts, const float* r, const float* gate, int64_t ldg, int64_t E,
                    int64_t kn, int64_t nv, float* panels) {
  for (int64_t j = 0; j < g; ++j)
    for (int64_t k = 0; k < kn; ++k) {
      const float* w = experts + k * E * kPanel;
      for (int64_t c = 0; c < nv * L; c += L) {
        v16 s = r[j * E] * loadu(w + c);
        for (int64_t e = 1; e < E; ++e) s += r[j * E + e] * loadu(w + e * kPanel + c);
        storeu(panels + (j * kn + k) * kPanel + c, gate ? s * gate[j * ldg + k] : s);
      }
    }
}

void mix_panels(int64_t g, const float* experts, const float* r, const float* gate, int64_t ldg, int64_t E,
                int64_t kn, int64_t nv, float* panels) {
  switch (E) {
    case 4: return mix_panels_g<4>(g, experts, r, gate, ldg, kn, nv, panels);
    case 8: return mix_panels_g<8>(g, experts, r, gate, ldg, kn, nv, panels);
  }
  mix_panels_any(g, experts, r, gate, ldg, E, kn, nv, panels);
}

// x: [B, K, H, W] channels_last; experts: [panels, K, E, 48] (cpu_kernels._experts_panels: each expert's [K, N]
// kernel cut into the panels of panel_span, zero-padded to 48 columns); routing [B, E]; bias [N], [B, N] or none;
// gate [B, K] or none; group_size: samples mixed together (cpu_kernels.group_size). Output [B, N, H, W]
// channels_last. N must be a multiple of 16.
at::Tensor pointwise(const at::Tensor& x, const at::Tensor& experts, const at::Tensor& routing,
                     const c10::optional<at::Tensor>& bias_opt, const c10::optional<at::Tensor>& gate_opt, int64_t N,
                     bool silu, int64_t group_size) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "pointwise: x must be a float32 channels_last [B, K, H, W] tensor");
  const int64_t B = x.size(0), K = x.size(1), M = x.size(2) * x.size(3);
  const int64_t nvec = N / L, panels = (nvec + kPanelVectors - 1) / kPanelVectors;
  TORCH_CHECK(N > 0 && N % L == 0, "pointwise: the output channels (", N, ") must be a positive multiple of 16");
  TORCH_CHECK(group_size >= 1, "pointwise: group_size must be at least 1, got ", group_size);
  TORCH_CHECK(experts.dim() == 4 && experts.scalar_type() == at::kFloat && experts.is_contiguous() &&
              experts.size(0) == panels && experts.size(1) == K && experts.size(3) == kPanel,
              "pointwise: experts must be a contiguous float32 [", panels, ", ", K, ", E, ", kPanel, "] tensor");
  const int64_t E = experts.size(2);
  const at::Tensor r = checked_routing(routing, B, E, "pointwise");
  const at::Tensor bias = checked_bias(bias_opt, B, N, "pointwise");
  at::Tensor gate;
  if (gate_opt.has_value() && gate_opt->defined()) {
    gate = gate_opt->contiguous();
    TORCH_CHECK(gate.scalar_type() == at::kFloat && gate.dim() == 2 && gate.size(0) == B && gate.size(1) == K,
                "pointwise: gate must be a float32 [", B, ", ", K, "] tensor");
  }
  const bool bias_per_sample = bias.defined() && bias.dim() == 2;
  at::Tensor out = at::empty({B, N, x.size(2), x.size(3)}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (M == 0 || B == 0) return out;
  const float* xp = x.data_ptr<float>();
  const float* ep = experts.data_ptr<float>();
  const float* rp = r.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const float* gp = gate.defined() ? gate.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  // Work: (panel, group of samples) pairs, panel-major. A group's kernels are mixed together, each expert vector
  // loaded once for its G samples: the experts are read once per group instead of once per sample (8 experts at
  // batch 32 read them from L3 32 times over). The group's mixed panels cover a range of kc input channels at a
  // time so that they stay in L2; the GEMM then runs over each range in turn, its partial sums kept in the output.
  // With enough pairs each thread takes whole pairs. With few (batch 1) the units split evenly between the threads
  // are the pairs' vectors of 16 output channels, each cut into `parts` pixel ranges where the vectors alone do
  // not split evenly: a thread mixes only the columns of its own units, so a panel that straddles two threads has
  // at most one vector mixed twice. (Splitting pixels alone had both threads mix the whole panel: 5-6% more expert
  // bytes per pass for b0_8e and b1_8e at batch 1.)
  const int64_t G = std::min(B, group_size), groups = (B + G - 1) / G;
  const int64_t kc = G == 1 ? K : std::max<int64_t>(16, std::min(K, kGroupPanelFloats / (G * kPanel)));
  const int64_t pairs = panels * groups, threads = at::get_num_threads(), block = M % 7 == 0 ? 7 : 8;
  const bool few = pairs < 4 * threads && threads > 1;
  const int64_t parts = few ? std::max<int64_t>(1, std::min(threads / std::gcd(groups * nvec, threads), M / block)) : 1;
  const int64_t part_len = (M / block + parts - 1) / parts * block;
  const int64_t units = groups * nvec * parts;
  // Vectors [va, va + nvv) of panel j (of the group from sample b0, g samples) against pixels [m0, m1), with the
  // panel's columns from vector vm on mixed in the buffer for input channels [k0, k0 + kn).
  auto gemm = [&](const float* buffer, int64_t j, int64_t b0, int64_t g, int64_t vm, int64_t va, int64_t nvv,
                  int64_t m0, int64_t m1, int64_t k0, int64_t kn) {
#ifdef CC_CONDCONV_SKIP_GEMM
    return;
#endif
    if (m0 >= m1 || nvv <= 0) return;
    int64_t v0, nv;
    panel_span(nvec, panels, j, v0, nv);
    const int64_t n0 = (v0 + va) * L;
    const bool first = k0 == 0, last = k0 + kn == K;
    for (int64_t s = 0; s < g; ++s) {
      const int64_t b = b0 + s;
      const float* bb = bp ? (bias_per_sample ? bp + b * N : bp) + n0 : nullptr;
      const float* a = xp + (b * M + m0) * K + k0;
      const float* p = buffer + s * kn * kPanel + (va - vm) * L;
      float* o = op + (b * M + m0) * N + n0;
      switch (nvv) {
        case 3: pw_range<3>(a, K, m1 - m0, kn, p, bb, o, N, first, last, silu); break;
        case 2: pw_range<2>(a, K, m1 - m0, kn, p, bb, o, N, first, last, silu); break;
        default: pw_range<1>(a, K, m1 - m0, kn, p, bb, o, N, first, last, silu); break;
      }
    }
  };
  auto mix = [&](float* buffer, int64_t j, int64_t b0, int64_t g, int64_t vm, int64_t nvm, int64_t k0, int64_t kn) {
#ifdef CC_CONDCONV_SKIP_MIX
    return;
#endif
    mix_panels(g, ep + (j * K + k0) * E * kPanel + vm * L, rp + b0 * E, gp ? gp + b0 * K + k0 : nullptr, K, E, kn,
               nvm, buffer);
  };
  const auto pixels = [&](int64_t part_lo, int64_t part_hi) {  // parts [part_lo, part_hi] as pixels [m0, m1)
    return std::make_pair(part_lo * part_len, part_hi == parts - 1 ? M : std::min(M, (part_hi + 1) * part_len));
  };
  at::parallel_for(0, few ? threads : pairs, 1, [&](int64_t i0, int64_t i1) {
    ScratchFloats buffer(G * kc * kPanel);
    for (int64_t i = i0; i < i1; ++i) {
      if (!few) {  // pair i, whole
        const int64_t j = i / groups, b0 = (i % groups) * G, g = std::min(G, B - b0);
        int64_t v0, nv;
        panel_span(nvec, panels, j, v0, nv);
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
          const int64_t kn = std::min(kc, K - k0);
          mix(buffer.data(), j, b0, g, 0, nv, k0, kn);
          gemm(buffer.data(), j, b0, g, 0, 0, nv, 0, M, k0, kn);
        }
        continue;
      }
      // thread i's units [u, u1): runs of units within one pair
      int64_t u = i * units / threads;
      const int64_t u1 = (i + 1) * units / threads;
      while (u < u1) {
        int64_t j = 0, v0 = 0, nv = 0;
        for (; j < panels; ++j) {
          panel_span(nvec, panels, j, v0, nv);
          if (u < (v0 + nv) * groups * parts) break;
        }
        const int64_t rem = u - v0 * groups * parts, per_pair = nv * parts;
        const int64_t grp = rem / per_pair, b0 = grp * G, g = std::min(G, B - b0);
        const int64_t run_end = std::min(u1, v0 * groups * parts + (grp + 1) * per_pair);
        const int64_t first_unit = rem % per_pair, last_unit = first_unit + (run_end - u) - 1;
        const int64_t va = first_unit / parts, pa = first_unit % parts, vb = last_unit / parts, pb = last_unit % parts;
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
          const int64_t kn = std::min(kc, K - k0);
          mix(buffer.data(), j, b0, g, va, vb - va + 1, k0, kn);  // only this run's columns
          if (va == vb) {
            const auto [m0, m1] = pixels(pa, pb);
            gemm(buffer.data(), j, b0, g, va, va, 1, m0, m1, k0, kn);
            continue;
          }
          const int64_t full_lo = pa == 0 ? va : va + 1, full_hi = pb == parts - 1 ? vb : vb - 1;
          if (pa != 0) {
            const auto [m0, m1] = pixels(pa, parts - 1);
            gemm(buffer.data(), j, b0, g, va, va, 1, m0, m1, k0, kn);
          }
          gemm(buffer.data(), j, b0, g, va, full_lo, full_hi - full_lo + 1, 0, M, k0, kn);
          if (pb != parts - 1) {
            const auto [m0, m1] = pixels(0, pb);
            gemm(buffer.data(), j, b0, g, va, vb, 1, m0, m1, k0, kn);
          }
        }
        u = run_end;
      }
    }
  });
  return out;
}
#endif

// The pointwise CondConvs' epilogue: out[b, m, :] = silu(out[b, m, :] + bias) in place, in one pass over the
// batched product's output (out [B, M, N] contiguous; bias [N], [B, N] or none). It replaces baddbmm's copy of the
// bias into the output and a SiLU pass of its own: 1.01-1.03x the whole model at batch 32 (b0/b1, A/B in one process).
at::Tensor& bias_silu_(at::Tensor& out, const c10::optional<at::Tensor>& bias_opt) {
  TORCH_CHECK(out.dim() == 3 && out.scalar_type() == at::kFloat && out.is_contiguous(),
              "bias_silu_: out must be a contiguous float32 [B, M, N] tensor");
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2);
  const at::Tensor bias = checked_bias(bias_opt, B, N, "bias_silu_");
  const bool per_sample = bias.defined() && bias.dim() == 2;
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * M, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = op + r * N;
      const float* bb = bp ? (per_sample ? bp + (r / M) * N : bp) : nullptr;
      int64_t j = 0;
      for (; j + L <= N; j += L) {
        v16 v = loadu(o + j);
        if (bb) v += loadu(bb + j);
        storeu(o + j, silu16(v));
      }
      for (; j < N; ++j) o[j] = silu1(o[j] + (bb ? bb[j] : 0.f));
    }
  });
  return out;
}

// The instruction set this library was compiled for (-march=native), which decides the kernels it registers:
// Python asks this rather than the dispatcher, whose kernel lookup is private API.
std::string build_isa() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#else
  return "x86-64";
#endif
}

}  // namespace

CC_LIBRARY(CC_CONDCONV_NS, m) {
  m.def("build_isa() -> str", &build_isa);
  m.def("routing(Tensor x, Tensor weight, Tensor bias, float scale) -> Tensor");
  m.def("depthwise(Tensor x, Tensor experts, Tensor routing, Tensor? bias, int kh, int kw, int stride, int pad_t, "
        "int pad_l, int Ho, int Wo, bool silu) -> Tensor");
  m.def("bias_silu_(Tensor(a!) out, Tensor? bias) -> Tensor(a!)");
  m.def("pointwise(Tensor x, Tensor experts, Tensor routing, Tensor? bias, Tensor? gate, int N, bool silu, "
        "int group_size) -> Tensor");
}
CC_LIBRARY_IMPL(CC_CONDCONV_NS, CPU, m) {
  m.impl("depthwise", depthwise);
  m.impl("bias_silu_", bias_silu_);
  m.impl("routing", routing);
#if defined(__AVX512F__)  // elsewhere the op has no CPU kernel and cpu_kernels._has_pointwise() is False
  m.impl("pointwise", pointwise);
#endif
}
