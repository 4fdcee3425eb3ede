// Float32 CPU kernels for a decode step, called from XLA through its FFI (maxtext_like/kernels/__init__.py).
//
// A decode step is bound by reading its weights and its KV cache once. XLA:CPU reads both well below the machine's
// memory bandwidth in the shapes of a step: a 1 MB layer projection of one row runs on one thread, the 4-row
// unembedding goes through a GEMM that first packs the weights, and the attention against a layer's cache runs as
// many tiny batched matmuls and a dozen small softmax fusions. These kernels read each weight and each cache entry
// once, in memory order, on XLA's own intra-op thread pool (the FFI ThreadPool context, so no threads of their own):
//   small_matmul       y_i[M, N_i] = x[M, K] @ w_i[K, N_i] for M <= 8 and one or more weights: each weight's rows
//                      are cut into one contiguous slab per thread, each slab accumulates its contribution to all
//                      of its y, and the partial sums are added at the end;
//   decode_attention   few-query attention (logits, masking, softmax, values) over each row's filled positions
//                      only, from a contiguous or a paged cache (see below);
//   logits_stats       each logits row's argmax and log-sum-exp, in one vectorized pass.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kRows = 8;           // weight rows read side by side (8 sequential streams) per pass over y
constexpr long kColumns = 256;     // y columns updated per pass, so the M rows of it stay in L1
constexpr long kSerial = 1 << 15;  // below this many weights the matmul runs on the calling thread alone

// acc[M, N] = x[:, k0:k1] @ w[k0:k1, :].
template <int M>
void Slab(const float* x, long K, const float* w, long N, float* acc, long k0, long k1) {
  std::memset(acc, 0, sizeof(float) * M * N);
  long k = k0;
  for (; k + kRows <= k1; k += kRows) {
    const float* rows[kRows];
    float a[kRows][M];
    for (int r = 0; r < kRows; ++r) {
      rows[r] = w + (k + r) * N;
      for (int m = 0; m < M; ++m) a[r][m] = x[m * K + k + r];
    }
    for (long j0 = 0; j0 < N; j0 += kColumns) {
      const long j1 = std::min(N, j0 + kColumns);
      for (int m = 0; m < M; ++m) {
        float* __restrict__ out = acc + m * N;
#pragma GCC ivdep
        for (long j = j0; j < j1; ++j) {
          float s = out[j];
          for (int r = 0; r < kRows; ++r) s += a[r][m] * rows[r][j];
          out[j] = s;
        }
      }
    }
  }
  for (; k < k1; ++k) {
    const float* row = w + k * N;
    for (int m = 0; m < M; ++m) {
      const float a = x[m * K + k];
      for (long j = 0; j < N; ++j) acc[m * N + j] += a * row[j];
    }
  }
}

using SlabFn = void (*)(const float*, long, const float*, long, float*, long, long);

SlabFn ForRows(long m) {
  switch (m) {
    case 1: return Slab<1>;
    case 2: return Slab<2>;
    case 3: return Slab<3>;
    case 4: return Slab<4>;
    case 5: return Slab<5>;
    case 6: return Slab<6>;
    case 7: return Slab<7>;
    case 8: return Slab<8>;
  }
  return nullptr;
}

// Runs fn(0) .. fn(chunks - 1) on the calling thread and on up to `threads - 1` tasks of XLA's pool. Chunks are
// claimed from a counter, so the call never waits on a task that has not started (a task that starts late finds no
// chunk left and returns); the state is shared with the tasks because one may start after the call has returned.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, long chunks, Fn fn) {
  if (chunks <= 1) {
    if (chunks == 1) fn(0);
    return;
  }
  struct State {
    explicit State(Fn f, long n) : fn(std::move(f)), chunks(n) {}
    Fn fn;
    long chunks;
    std::atomic<long> next{0};
    std::atomic<long> done{0};
    void Work() {
      for (long c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
        fn(c);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto state = std::make_shared<State>(std::move(fn), chunks);
  const long threads = std::max<long>(1, pool.num_threads());
  for (long t = 1; t < std::min(threads, chunks); ++t) pool.Schedule([state] { state->Work(); });
  state->Work();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

long Threads(ffi::ThreadPool& pool) { return std::max<long>(1, pool.num_threads()); }

// Adds rest[0 .. n-1) into out (n partial results of `size` floats each, the first one out itself).
void AddPartials(float* out, const float* rest, long n, long size) {
  for (long s = 0; s + 1 < n; ++s) {
    const float* p = rest + s * size;
#pragma GCC ivdep
    for (long i = 0; i < size; ++i) out[i] += p[i];
  }
}

// y_i = x @ w_i for the n weights of one call (the projections of one input: q, k and v, or a gated MLP's two),
// over one parallel loop of all their slabs: one hand-off to the pool per group instead of per matmul.
ffi::Error SmallMatmulsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::RemainingArgs ws,
                            ffi::RemainingRets ys) {
  const auto xd = x.dimensions();
  if (xd.size() != 2 || ws.size() == 0 || ws.size() != ys.size()) {
    return ffi::Error::InvalidArgument("small_matmul: expected x [M, K], weights w_i [K, N_i] and as many results");
  }
  const long M = xd[0], K = xd[1];
  const SlabFn fn = ForRows(M);
  if (fn == nullptr) return ffi::Error::InvalidArgument("small_matmul: M must be between 1 and 8");
  struct Job {
    const float* w;
    float* y;
    long N, slab, slabs, rest;  // rest: offset of its partial sums in `rest` below
  };
  std::vector<Job> jobs;
  std::vector<std::pair<long, long>> chunks;  // (job, slab)
  long rest_size = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    const auto w = ws.get<ffi::Buffer<ffi::F32>>(i);
    auto y = ys.get<ffi::Buffer<ffi::F32>>(i);
    if (!w.has_value() || !y.has_value()) return ffi::Error::InvalidArgument("small_matmul: float32 arrays only");
    const auto wd = w->dimensions();
    const auto yd = (*y)->dimensions();
    if (wd.size() != 2 || wd[0] != K || yd.size() != 2 || yd[0] != M || yd[1] != wd[1]) {
      return ffi::Error::InvalidArgument("small_matmul: expected w [K, N] and y [M, N] for x [M, K]");
    }
    const long N = wd[1];
    const long slabs0 = K * N < kSerial ? 1 : std::min<long>(Threads(pool), std::max<long>(1, K / (2 * kRows)));
    const long slab = ((K + slabs0 - 1) / slabs0 + kRows - 1) / kRows * kRows;
    const long slabs = (K + slab - 1) / slab;
    for (long s = 0; s < slabs; ++s) chunks.emplace_back(jobs.size(), s);
    jobs.push_back({w->typed_data(), (*y)->typed_data(), N, slab, slabs, rest_size});
    rest_size += (slabs - 1) * M * N;  // slab s > 0 accumulates into its own partial sum, slab 0 into y
  }
  std::vector<float> rest(rest_size);
  const float* xp = x.typed_data();
  ParallelFor(pool, chunks.size(), [&, fn](long c) {
    const auto [j, s] = chunks[c];
    const Job& job = jobs[j];
    float* out = s == 0 ? job.y : rest.data() + job.rest + (s - 1) * M * job.N;
    fn(xp, K, job.w, job.N, out, s * job.slab, std::min(K, (s + 1) * job.slab));
  });
  for (const Job& job : jobs) AddPartials(job.y, rest.data() + job.rest, job.slabs, M * job.N);
  return ffi::Error::Success();
}

// exp(x) for x <= 0, vectorizable: x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite, two-part ln2), exp(r) by Cephes'
// expf polynomial (about 1 ulp), times 2^n built in the exponent bits; below -87 it returns exp(-87) ~ 1.6e-38.
inline float ExpNonPositive(float x) {
  x = x < -87.f ? -87.f : x;
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer, kept in the low mantissa bits
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.f;
  int32_t bits;
  std::memcpy(&bits, &t, sizeof(bits));
  const int32_t e = (bits - 0x4b400000 + 127) << 23;  // n + 127 in the exponent field
  float scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return y * scale;
}

// Few-query attention of a decode step in one call, for the query laid out [B, T, K, G, H] (T positions, G query
// heads per key head, already scaled) against a cache of K key/value heads:
//   out[b, t, k, g, :] = sum over s of p[s] * values[b, s, k, :],
//   p = softmax of cap(q[b, t, k, g, :] . keys[b, s, k, :]) over the positions s with mask[b, t, s],
// with cap(x) = soft_cap * tanh(x / soft_cap) when soft_cap > 0. A query that may see no position gets zeros (XLA's
// masked softmax would average values it may not see; such queries are padding). The same softmax also takes, when
// given, the step's own new entries (new_keys / new_values [B, U, K, H] with new_mask [B, T, U], entries not yet in
// the cache) and one sink logit per query head (sinks [K * G]: in the denominator only).
// Only positions s < limit[b] are read: the caller's mask hides every later one from all of row b's queries, so a
// row costs its length, not the cache's. The cache is contiguous, [B, S, K, H], or paged: a pool [P, page, K, H]
// and a table [B, M] of each row's pages (S = M * page), read in place with no gather.
// Work is split over (batch row, position part) tasks; each reads its rows of keys and values once, whole (all K
// heads) and in memory order, and keeps its queries' running max, sum of exponentials and weighted values; the parts
// are merged at the end (as flash-decoding does). A task per (row, head) read each row in K strided pieces, one
// page apart for long heads, which defeated the prefetchers: 4x slower at 8 heads of 128.

struct ContiguousRows {  // keys or values [B, S, K, H]
  const float* base;
  long S, width;
  const float* operator()(long b, long s) const { return base + (b * S + s) * width; }
};

struct PagedRows {  // a pool [P, page, K, H] and each row's page table [B, M]; past the table: scratch page 0
  const float* pool;
  const int32_t* table;
  long M, page, width;
  const float* operator()(long b, long s) const {
    const long m = s / page;
    const long id = m < M ? table[b * M + m] : 0;
    return pool + (id * page + s % page) * width;
  }
};

long Limit(const int32_t* limit, long b, long S) { return std::clamp<long>(limit[b], 0, S); }

struct AttentionShape {
  long B, T, K, G, H, Hv, S, U;
  float soft_cap;
  float Logit(float x, bool keep) const {
    if (soft_cap > 0.f) x = soft_cap * std::tanh(x / soft_cap);
    return keep ? x : -std::numeric_limits<float>::infinity();
  }
};

float Dot(const float* a, const float* b, long n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (long i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// exp(x) for x <= 0 that is 0 below -87, where XLA's exp gives 0 or a subnormal.
inline float ExpOrZero(float x) { return x < -87.f ? 0.f : ExpNonPositive(x); }

// One task's queries (all T * K * G of row b, y = (t * K + k) * G + g) over cache positions [s0, s1): per query the
// max logit m, the sum l of exp(logit - m) and acc = sum of exp(logit - m) * value (m = -inf and l = 0 when no
// position of the range is visible to it).
template <typename Rows>
void AttendRange(const AttentionShape& a, const Rows& keys, const Rows& values, const float* q, const bool* mask,
                 long b, long s0, long s1, float* m, float* l, float* acc) {
  const long Y = a.T * a.K * a.G;
  const float* qb = q + b * Y * a.H;
  std::vector<float> sc(std::max<long>(0, s1 - s0) * Y);  // [s, y]
  for (long s = s0; s < s1; ++s) {
    const float* row = keys(b, s);
    float* out = sc.data() + (s - s0) * Y;
    for (long t = 0; t < a.T; ++t) {
      const bool keep = mask[(b * a.T + t) * a.S + s];
      for (long k = 0; k < a.K; ++k) {
        for (long g = 0; g < a.G; ++g) {
          const long y = (t * a.K + k) * a.G + g;
          out[y] = a.Logit(Dot(qb + y * a.H, row + k * a.H, a.H), keep);
        }
      }
    }
  }
  std::fill(m, m + Y, -std::numeric_limits<float>::infinity());
  std::fill(l, l + Y, 0.f);
  std::fill(acc, acc + Y * a.Hv, 0.f);
  for (long s = s0; s < s1; ++s)
    for (long y = 0; y < Y; ++y) m[y] = std::max(m[y], sc[(s - s0) * Y + y]);
  for (long s = s0; s < s1; ++s) {
    const float* row = values(b, s);
    for (long y = 0; y < Y; ++y) {
      const float x = sc[(s - s0) * Y + y];
      if (x == -std::numeric_limits<float>::infinity()) continue;
      const float e = ExpOrZero(x - m[y]);
      l[y] += e;
      const float* vv = row + (y / a.G % a.K) * a.Hv;
      float* __restrict__ out = acc + y * a.Hv;
#pragma omp simd
      for (long h = 0; h < a.Hv; ++h) out[h] += e * vv[h];
    }
  }
}

// Merges the parts of row b into out, with the new entries and the sinks.
void MergeParts(const AttentionShape& a, long parts, const float* q, const float* new_keys,
                const float* new_values, const bool* new_mask, const float* sinks, long b, const float* m,
                const float* l, const float* acc, float* o) {
  const long Y = a.T * a.K * a.G;
  std::vector<float> new_logits(a.U);
  for (long t = 0; t < a.T; ++t) {
    for (long k = 0; k < a.K; ++k) {
      for (long g = 0; g < a.G; ++g) {
        const long y = (t * a.K + k) * a.G + g;
        const float* qv = q + (b * Y + y) * a.H;
        for (long u = 0; u < a.U; ++u) {
          new_logits[u] = a.Logit(Dot(qv, new_keys + ((b * a.U + u) * a.K + k) * a.H, a.H),
                                  new_mask[(b * a.T + t) * a.U + u]);
        }
        float top = -std::numeric_limits<float>::infinity();
        for (long p = 0; p < parts; ++p) top = std::max(top, m[p * Y + y]);
        for (long u = 0; u < a.U; ++u) top = std::max(top, new_logits[u]);
        if (sinks != nullptr) top = std::max(top, sinks[k * a.G + g]);
        float denom = 0.f;
        float* out = o + (b * Y + y) * a.Hv;
        std::fill(out, out + a.Hv, 0.f);
        for (long p = 0; p < parts; ++p) {
          if (l[p * Y + y] == 0.f) continue;
          const float w = std::exp(m[p * Y + y] - top);
          denom += l[p * Y + y] * w;
          const float* part = acc + (p * Y + y) * a.Hv;
          for (long h = 0; h < a.Hv; ++h) out[h] += w * part[h];
        }
        for (long u = 0; u < a.U; ++u) {
          if (new_logits[u] == -std::numeric_limits<float>::infinity()) continue;
          const float w = std::exp(new_logits[u] - top);
          denom += w;
          const float* vv = new_values + ((b * a.U + u) * a.K + k) * a.Hv;
          for (long h = 0; h < a.Hv; ++h) out[h] += w * vv[h];
        }
        if (sinks != nullptr) denom += std::exp(sinks[k * a.G + g] - top);
        const float inv = denom > 0.f ? 1.f / denom : 0.f;
        for (long h = 0; h < a.Hv; ++h) out[h] *= inv;
      }
    }
  }
}

template <typename Rows>
void DecodeAttention(ffi::ThreadPool& pool, const AttentionShape& a, const Rows& keys, const Rows& values,
                     const float* q, const int32_t* limit, const bool* mask, const float* new_keys,
                     const float* new_values, const bool* new_mask, const float* sinks, float* o) {
  const long Y = a.T * a.K * a.G, threads = Threads(pool);
  // Fewer rows than threads: each also splits its positions, at least 64 per part.
  const long parts = (a.B >= threads || a.S * a.K * a.H < kSerial)
                         ? 1 : std::max<long>(1, std::min<long>((threads + a.B - 1) / a.B, a.S / 64));
  std::vector<float> m(a.B * parts * Y), l(a.B * parts * Y), acc(a.B * parts * Y * a.Hv);
  ParallelFor(pool, a.B * parts, [&](long c) {
    const long b = c / parts, part = c % parts;
    const long end = Limit(limit, b, a.S), span = (end + parts - 1) / parts;
    const long s0 = std::min(end, part * span), s1 = std::min(end, s0 + span);
    AttendRange(a, keys, values, q, mask, b, s0, s1, m.data() + c * Y, l.data() + c * Y, acc.data() + c * Y * a.Hv);
  });
  for (long b = 0; b < a.B; ++b) {
    const long c = b * parts;
    MergeParts(a, parts, q, new_keys, new_values, new_mask, sinks, b, m.data() + c * Y, l.data() + c * Y,
               acc.data() + c * Y * a.Hv, o);
  }
}

// The statistics a decode step needs from its logits [B, V]: each row's first largest index (jnp.argmax) and its
// log-sum-exp, so that log_softmax(logits)[b, t] = logits[b, t] - lse[b]. XLA:CPU reduces the 32k exponentials of
// a row in order, one at a time; here they are summed in vector lanes, with ExpNonPositive above. A row with a
// NaN gets index V - 1 and a NaN lse; a row whose largest value is infinite gets a NaN lse (as in XLA).
void RowStats(const float* row, long V, int32_t* index, float* lse) {
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
#pragma omp simd reduction(max : m) reduction(| : nan)
  for (long i = 0; i < V; ++i) {
    m = std::max(m, row[i]);
    nan |= row[i] != row[i];
  }
  if (nan) {
    *index = static_cast<int32_t>(V - 1);
    *lse = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  long first = 0;
  while (row[first] != m) ++first;
  *index = static_cast<int32_t>(first);
  if (!std::isfinite(m)) {
    *lse = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (long i = 0; i < V; ++i) sum += ExpNonPositive(row[i] - m);
  *lse = m + std::log(sum);
}

ffi::Error LogitsStatsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits, ffi::ResultBuffer<ffi::S32> index,
                           ffi::ResultBuffer<ffi::F32> lse) {
  const auto d = logits.dimensions();
  if (d.size() != 2 || d[1] < 1) return ffi::Error::InvalidArgument("logits_stats: expected logits [B, V], V >= 1");
  const long B = d[0], V = d[1];
  const float* lp = logits.typed_data();
  int32_t* ip = index->typed_data();
  float* sp = lse->typed_data();
  const auto row = [&](long b) { RowStats(lp + b * V, V, ip + b, sp + b); };
  if (B * V < kSerial) {
    for (long b = 0; b < B; ++b) row(b);
  } else {
    ParallelFor(pool, B, row);
  }
  return ffi::Error::Success();
}

ffi::Error DecodeAttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> keys,
                               ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> table, ffi::Buffer<ffi::S32> limit,
                               ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> new_keys,
                               ffi::Buffer<ffi::F32> new_values, ffi::Buffer<ffi::PRED> new_mask,
                               ffi::Buffer<ffi::F32> sinks, float soft_cap, ffi::ResultBuffer<ffi::F32> o) {
  const auto qd = q.dimensions(), kd = keys.dimensions(), vd = values.dimensions(), td = table.dimensions();
  const auto md = mask.dimensions(), nd = new_keys.dimensions(), nvd = new_values.dimensions();
  const auto nmd = new_mask.dimensions();
  if (qd.size() != 5 || kd.size() != 4 || vd.size() != 4 || md.size() != 3 || nd.size() != 4 || nvd.size() != 4 ||
      nmd.size() != 3) {
    return ffi::Error::InvalidArgument("decode_attention: expected q [B, T, K, G, H], keys and values [B, S, K, H] "
                                       "(or pools [P, page, K, H]), mask [B, T, S], new entries [B, U, K, H], "
                                       "new_mask [B, T, U]");
  }
  const long B = qd[0], T = qd[1], K = qd[2], G = qd[3], H = qd[4], Hv = vd[3], S = md[2], U = nd[1];
  const bool paged = table.element_count() > 0;
  const bool ok = kd[2] == K && kd[3] == H && vd[2] == K && kd[0] == vd[0] && kd[1] == vd[1] &&
                  limit.element_count() == B && md[0] == B && md[1] == T && nd[0] == B && nd[2] == K &&
                  nd[3] == H && nvd[0] == B && nvd[1] == U && nvd[2] == K && nvd[3] == Hv && nmd[0] == B &&
                  nmd[1] == T && nmd[2] == U && (sinks.element_count() == 0 || sinks.element_count() == K * G) &&
                  (paged ? (td.size() == 2 && td[0] == B && td[1] * kd[1] == S) : (kd[0] == B && kd[1] == S));
  if (!ok) {
    return ffi::Error::InvalidArgument("decode_attention: the cache, table, limit, mask, new entries or sinks do not "
                                       "match the query [B, T, K, G, H] and the mask's length S");
  }
  const AttentionShape a{B, T, K, G, H, Hv, S, U, soft_cap};
  const float* sp = sinks.element_count() > 0 ? sinks.typed_data() : nullptr;
  const auto run = [&](const auto& k_rows, const auto& v_rows) {
    DecodeAttention(pool, a, k_rows, v_rows, q.typed_data(), limit.typed_data(), mask.typed_data(),
                    new_keys.typed_data(), new_values.typed_data(), new_mask.typed_data(), sp, o->typed_data());
  };
  if (paged) {
    const long M = td[1], page = kd[1];
    run(PagedRows{keys.typed_data(), table.typed_data(), M, page, K * H},
        PagedRows{values.typed_data(), table.typed_data(), M, page, K * Hv});
  } else {
    run(ContiguousRows{keys.typed_data(), S, K * H}, ContiguousRows{values.typed_data(), S, K * Hv});
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxtextLikeSmallMatmul, SmallMatmulsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .RemainingArgs()               // the weights
                                  .RemainingRets());             // one result per weight

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxtextLikeDecodeAttention, DecodeAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // keys
                                  .Arg<ffi::Buffer<ffi::F32>>()   // values
                                  .Arg<ffi::Buffer<ffi::S32>>()   // table
                                  .Arg<ffi::Buffer<ffi::S32>>()   // limit
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // mask
                                  .Arg<ffi::Buffer<ffi::F32>>()   // new_keys
                                  .Arg<ffi::Buffer<ffi::F32>>()   // new_values
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // new_mask
                                  .Arg<ffi::Buffer<ffi::F32>>()   // sinks
                                  .Attr<float>("soft_cap")
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxtextLikeLogitsStats, LogitsStatsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
