// y[M, N] = x[M, K] @ w[K, N] in float32 for the few rows of a decode step (M <= 8).
//
// XLA:CPU runs a matmul of a few rows against a weight matrix well below the machine's memory bandwidth: a
// 1 MB layer projection runs on one thread, and the 4-row unembedding goes through a GEMM that packs the weights
// first. A decode step is bound by reading its weights once, so this kernel reads them once, in memory order:
// the weight rows are cut into one contiguous slab per thread of XLA's own intra-op pool (the FFI ThreadPool
// context, so no threads of its own), each thread accumulates its slab's contribution to all of y, and the
// partial sums are added at the end.
#include <algorithm>
#include <atomic>
#include <cstring>
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

// Slabs are claimed from a counter by the calling thread and by the tasks it schedules, so the call never waits on
// a task that has not started: a task that starts late finds no slab left and returns. The job is shared with the
// tasks because one may start after the call has returned.
struct Job {
  SlabFn fn;
  const float* x;
  long M, K, N;
  const float* w;
  float* y;
  long slab, slabs;
  std::vector<float> partial;  // slab s > 0 accumulates into partial[s - 1]; slab 0 into y
  std::atomic<long> next{0};
  std::atomic<long> done{0};

  void Work() {
    for (long s = next.fetch_add(1); s < slabs; s = next.fetch_add(1)) {
      float* acc = s == 0 ? y : partial.data() + (s - 1) * M * N;
      fn(x, K, w, N, acc, s * slab, std::min(K, (s + 1) * slab));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

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
  auto job = std::make_shared<Job>();
  job->fn = fn;
  job->x = x.typed_data();
  job->M = M;
  job->K = K;
  job->N = N;
  job->w = w.typed_data();
  job->y = y->typed_data();
  const long threads = std::max<long>(1, pool.num_threads());
  const long slabs = K * N < kSerial ? 1 : std::min<long>(threads, std::max<long>(1, K / (2 * kRows)));
  job->slab = ((K + slabs - 1) / slabs + kRows - 1) / kRows * kRows;
  job->slabs = (K + job->slab - 1) / job->slab;
  job->partial.resize((job->slabs - 1) * M * N);
  for (long t = 1; t < job->slabs; ++t) pool.Schedule([job] { job->Work(); });
  job->Work();
  while (job->done.load(std::memory_order_acquire) < job->slabs) std::this_thread::yield();
  float* out = y->typed_data();
  for (long s = 1; s < job->slabs; ++s) {
    const float* p = job->partial.data() + (s - 1) * M * N;
#pragma GCC ivdep
    for (long i = 0; i < M * N; ++i) out[i] += p[i];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxtextLikeSmallMatmul, SmallMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
