// Float32 CPU kernels for a decode step, called from XLA through its FFI (maxtext_like/kernels/__init__.py).
//
// A decode step is bound by reading its weights and its KV cache once. XLA:CPU reads both well below the machine's
// memory bandwidth in the shapes of a step: a 1 MB layer projection of one row runs on one thread, the 4-row
// unembedding goes through a GEMM that first packs the weights, and the attention dots against a layer's cache
// run as many tiny batched matmuls. These kernels read each weight and each cache entry once, in memory order, on
// XLA's own intra-op thread pool (the FFI ThreadPool context, so no threads of their own):
//   small_matmul       y[M, N] = x[M, K] @ w[K, N] for M <= 8: the weight rows are cut into one contiguous slab
//                      per thread, each thread accumulates its slab's contribution to all of y, and the partial
//                      sums are added at the end;
//   attention_scores   and attention_values: the two dots of few-query attention, over each row's filled
//                      positions only, from a contiguous or a paged cache (see below);
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

// Adds parts[1..n) into parts[0] (n partial results of `size` floats each, the first one the output).
void AddPartials(float* out, const std::vector<float>& rest, long n, long size) {
  for (long s = 0; s + 1 < n; ++s) {
    const float* p = rest.data() + s * size;
#pragma GCC ivdep
    for (long i = 0; i < size; ++i) out[i] += p[i];
  }
}

ffi::Error SmallMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                           ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[0]) {
    return ffi::Error::InvalidArgument("small_matmul: expected x [M, K] and w [K, N]");
  }
  const long M = xd[0], K = xd[1], N = wd[1];
  const SlabFn fn = ForRows(M);
  if (fn == nullptr) return ffi::Error::InvalidArgument("small_matmul: M must be between 1 and 8");
  const long slabs0 = K * N < kSerial ? 1 : std::min<long>(Threads(pool), std::max<long>(1, K / (2 * kRows)));
  const long slab = ((K + slabs0 - 1) / slabs0 + kRows - 1) / kRows * kRows;
  const long slabs = (K + slab - 1) / slab;
  float* out = y->typed_data();
  std::vector<float> rest((slabs - 1) * M * N);  // slab s > 0 accumulates into rest[s - 1], slab 0 into y
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  ParallelFor(pool, slabs, [&, fn](long s) {
    fn(xp, K, wp, N, s == 0 ? out : rest.data() + (s - 1) * M * N, s * slab, std::min(K, (s + 1) * slab));
  });
  AddPartials(out, rest, slabs, M * N);
  return ffi::Error::Success();
}

// Decode attention over a cache of K key/value heads, for the query laid out [B, T, K, G, H] (T positions, G query
// heads per key head):
//   scores  s[b, s, t, k, g] = q[b, t, k, g, :] . keys[b, s, k, :]
//   values  o[b, t, k, g, :] = sum_s p[b, s, t, k, g] * values[b, s, k, :]
// Only positions s < limit[b] are read: the caller's mask hides every later one from all of row b's queries (their
// scores are written as 0 and masked; their probabilities are 0), so a row costs its length, not the cache's.
// The cache is contiguous, [B, S, K, H], or paged: a pool [P, page, K, H] and a table [B, M] of each row's pages
// (S = M * page), read in place with no gather. Work is split over (batch row, position range) chunks.

constexpr long kPositionsPerChunk = 128;

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

template <typename Rows>
void Scores(ffi::ThreadPool& pool, const Rows& rows, const float* qp, const int32_t* limit, float* sp, long B, long T,
            long K, long G, long H, long S) {
  const long per_b = (S + kPositionsPerChunk - 1) / kPositionsPerChunk;
  const long Y = T * K * G;
  ParallelFor(pool, B * per_b, [&](long c) {
    const long b = c / per_b, s0 = (c % per_b) * kPositionsPerChunk, s1 = std::min(S, s0 + kPositionsPerChunk);
    const long end = std::clamp(Limit(limit, b, S), s0, s1);
    const float* qb = qp + b * Y * H;
    for (long i = s0; i < end; ++i) {
      const float* krow = rows(b, i);
      float* out = sp + (b * S + i) * Y;
      for (long t = 0; t < T; ++t) {
        for (long k = 0; k < K; ++k) {
          const float* kv = krow + k * H;
          for (long g = 0; g < G; ++g) {
            const float* qv = qb + ((t * K + k) * G + g) * H;
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (long h = 0; h < H; ++h) acc += qv[h] * kv[h];
            out[(t * K + k) * G + g] = acc;
          }
        }
      }
    }
    if (end < s1) std::memset(sp + (b * S + end) * Y, 0, sizeof(float) * (s1 - end) * Y);
  });
}

template <typename Rows>
void Values(ffi::ThreadPool& pool, const Rows& rows, const float* pp, const int32_t* limit, float* op, long B, long T,
            long K, long G, long H, long S) {
  const long Y = T * K * G;
  // Batch rows first; fewer rows than threads also split their positions, into partial sums.
  const long threads = Threads(pool);
  const long splits = (B >= threads || S * K * H < kSerial) ? 1 : std::min<long>(threads, (S + 63) / 64);
  std::vector<float> rest(splits > 1 ? (splits - 1) * B * Y * H : 0);
  ParallelFor(pool, B * splits, [&](long c) {
    const long b = c / splits, part = c % splits;
    const long end = Limit(limit, b, S), span = (end + splits - 1) / splits;
    const long s0 = std::min(end, part * span), s1 = std::min(end, s0 + span);
    float* out = (part == 0 ? op : rest.data() + (part - 1) * B * Y * H) + b * Y * H;
    std::memset(out, 0, sizeof(float) * Y * H);
    for (long i = s0; i < s1; ++i) {
      const float* vrow = rows(b, i);
      const float* prow = pp + (b * S + i) * Y;
      for (long t = 0; t < T; ++t) {
        for (long k = 0; k < K; ++k) {
          const float* vv = vrow + k * H;
          for (long g = 0; g < G; ++g) {
            const long y = (t * K + k) * G + g;
            const float w = prow[y];
            float* __restrict__ acc = out + y * H;
#pragma omp simd
            for (long h = 0; h < H; ++h) acc[h] += w * vv[h];
          }
        }
      }
    }
  });
  AddPartials(op, rest, splits, B * Y * H);
}

// The statistics a decode step needs from its logits [B, V]: each row's first largest index (jnp.argmax) and its
// log-sum-exp, so that log_softmax(logits)[b, t] = logits[b, t] - lse[b]. XLA:CPU reduces the 32k exponentials of
// a row in order, one at a time; here they are summed in vector lanes, with exp from the polynomial below. A row
// with a NaN gets index V - 1 and a NaN lse; a row whose largest value is infinite gets a NaN lse (as in XLA).

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

// Checks the cache, the page table and limit against the query's B, K, H (H < 0: any) and the logical length S,
// then calls fn with the cache's row accessor: PagedRows when the table is not empty, ContiguousRows otherwise.
template <typename Fn>
ffi::Error WithRows(const ffi::Buffer<ffi::F32>& cache, const ffi::Buffer<ffi::S32>& table,
                    const ffi::Buffer<ffi::S32>& limit, long B, long K, long H, long S, Fn fn) {
  const auto cd = cache.dimensions();
  const auto td = table.dimensions();
  const auto ld = limit.dimensions();
  const bool paged = table.element_count() > 0;
  const bool ok = cd.size() == 4 && cd[2] == K && (H < 0 || cd[3] == H) && ld.size() == 1 && ld[0] == B &&
                  (paged ? (td.size() == 2 && td[0] == B && td[1] * cd[1] == S) : (cd[0] == B && cd[1] == S));
  if (!ok) {
    return ffi::Error::InvalidArgument("decode attention: expected a cache [B, S, K, H] (or a pool [P, page, K, H] "
                                       "with a table [B, S / page]) and limit [B] matching the query");
  }
  const long width = cd[2] * cd[3];
  if (paged) {
    fn(PagedRows{cache.typed_data(), table.typed_data(), S / cd[1], cd[1], width});
  } else {
    fn(ContiguousRows{cache.typed_data(), S, width});
  }
  return ffi::Error::Success();
}

ffi::Error AttentionScoresImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> keys,
                               ffi::Buffer<ffi::S32> table, ffi::Buffer<ffi::S32> limit,
                               ffi::ResultBuffer<ffi::F32> s) {
  const auto qd = q.dimensions();
  const auto sd = s->dimensions();
  if (qd.size() != 5 || sd.size() != 5) return ffi::Error::InvalidArgument("attention_scores: expected q [B, T, K, G, H]");
  const long B = qd[0], T = qd[1], K = qd[2], G = qd[3], H = qd[4], S = sd[1];
  return WithRows(keys, table, limit, B, K, H, S, [&](const auto& rows) {
    Scores(pool, rows, q.typed_data(), limit.typed_data(), s->typed_data(), B, T, K, G, H, S);
  });
}

ffi::Error AttentionValuesImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> values,
                               ffi::Buffer<ffi::S32> table, ffi::Buffer<ffi::S32> limit,
                               ffi::ResultBuffer<ffi::F32> o) {
  const auto pd = p.dimensions();
  if (pd.size() != 5) return ffi::Error::InvalidArgument("attention_values: expected p [B, S, T, K, G]");
  const auto vd = values.dimensions();
  const long B = pd[0], S = pd[1], T = pd[2], K = pd[3], G = pd[4], H = vd.size() == 4 ? vd[3] : 0;
  return WithRows(values, table, limit, B, K, -1, S, [&](const auto& rows) {
    Values(pool, rows, p.typed_data(), limit.typed_data(), o->typed_data(), B, T, K, G, H, S);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxtextLikeSmallMatmul, SmallMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// The two attention kernels take the same operands.
#define MAXTEXT_LIKE_ATTENTION(name, impl)                                                             \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, impl,                                                           \
                                ffi::Ffi::Bind()                                                      \
                                    .Ctx<ffi::ThreadPool>()                                           \
                                    .Arg<ffi::Buffer<ffi::F32>>()                                     \
                                    .Arg<ffi::Buffer<ffi::F32>>()                                     \
                                    .Arg<ffi::Buffer<ffi::S32>>()                                     \
                                    .Arg<ffi::Buffer<ffi::S32>>()                                     \
                                    .Ret<ffi::Buffer<ffi::F32>>());

MAXTEXT_LIKE_ATTENTION(MaxtextLikeAttentionScores, AttentionScoresImpl)
MAXTEXT_LIKE_ATTENTION(MaxtextLikeAttentionValues, AttentionValuesImpl)

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxtextLikeLogitsStats, LogitsStatsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
