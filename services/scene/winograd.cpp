// Winograd F(4x4, 3x3) convolution for channels-last float tensors (stride 1, padding 1).
//
// A 3x3 convolution computes each 4x4 output tile from a 6x6 input tile with 36 multiplications
// per (input, output) channel pair instead of 144: the tile is transformed (V = Bt d B), each of
// the 36 transformed positions is a plain matrix product over channels (one grouped 1x1
// convolution, run by oneDNN), and the products are transformed back (Y = At M A). The
// transforms are the memory-bound part; they run here, tile by tile, over chunks of tiles small
// enough that the transformed data stays in cache between the three steps.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t kTile = 4;   // output tile side
constexpr int64_t kAlpha = 6;  // input tile side: kTile + 3 - 1
constexpr int64_t kPositions = kAlpha * kAlpha;

// The transforms along one axis, vectorised over the channels. Inputs and outputs never overlap;
// the restrict-qualified parameters tell the compiler so.

// out = Bt . in for six rows of `n` channels (the F(4,3) input transform).
void input_rows(int64_t n, const float* __restrict__ i0, const float* __restrict__ i1,
                const float* __restrict__ i2, const float* __restrict__ i3,
                const float* __restrict__ i4, const float* __restrict__ i5,
                float* __restrict__ o0, float* __restrict__ o1, float* __restrict__ o2,
                float* __restrict__ o3, float* __restrict__ o4, float* __restrict__ o5) {
  for (int64_t c = 0; c < n; ++c) {
    const float d0 = i0[c], d1 = i1[c], d2 = i2[c], d3 = i3[c], d4 = i4[c], d5 = i5[c];
    o0[c] = 4.0f * d0 - 5.0f * d2 + d4;
    o1[c] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
    o2[c] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
    o3[c] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
    o4[c] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
    o5[c] = 4.0f * d1 - 5.0f * d3 + d5;
  }
}

inline void input_rows(const float* const in[kAlpha], float* const out[kAlpha], int64_t n) {
  input_rows(n, in[0], in[1], in[2], in[3], in[4], in[5], out[0], out[1], out[2], out[3], out[4],
             out[5]);
}

// out = At . in for six rows of `n` channels (the output transform).
void output_rows(int64_t n, const float* __restrict__ i0, const float* __restrict__ i1,
                 const float* __restrict__ i2, const float* __restrict__ i3,
                 const float* __restrict__ i4, const float* __restrict__ i5,
                 float* __restrict__ o0, float* __restrict__ o1, float* __restrict__ o2,
                 float* __restrict__ o3) {
  for (int64_t c = 0; c < n; ++c) {
    const float m0 = i0[c], m1 = i1[c], m2 = i2[c], m3 = i3[c], m4 = i4[c], m5 = i5[c];
    const float sum12 = m1 + m2, diff12 = m1 - m2;
    const float sum34 = m3 + m4, diff34 = m3 - m4;
    o0[c] = m0 + sum12 + sum34;
    o1[c] = diff12 + 2.0f * diff34;
    o2[c] = sum12 + 4.0f * sum34;
    o3[c] = diff12 + 8.0f * diff34 + m5;
  }
}

inline void output_rows(const float* const in[kAlpha], float* const out[kTile], int64_t n) {
  output_rows(n, in[0], in[1], in[2], in[3], in[4], in[5], out[0], out[1], out[2], out[3]);
}

struct Geometry {
  int64_t batch, height, width, tiles_y, tiles_x;
  int64_t tiles() const { return batch * tiles_y * tiles_x; }
};

// Transformed input tiles [first, first + count) of x (N, H, W, C) into v (count, 36, C).
void transform_input(const float* x, const Geometry& g, int64_t channels, int64_t first,
                     int64_t count, float* v) {
  const std::vector<float> zeros(channels, 0.0f);
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(kPositions * channels);  // Bt d, (a, column, channel)
    for (int64_t local = begin; local < end; ++local) {
      const int64_t tile = first + local;
      const int64_t tx = tile % g.tiles_x;
      const int64_t ty = (tile / g.tiles_x) % g.tiles_y;
      const int64_t n = tile / (g.tiles_x * g.tiles_y);
      const float* in[kAlpha];
      float* out[kAlpha];
      for (int64_t column = 0; column < kAlpha; ++column) {
        const int64_t ix = tx * kTile - 1 + column;
        for (int64_t row = 0; row < kAlpha; ++row) {
          const int64_t iy = ty * kTile - 1 + row;
          const bool inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
          in[row] = inside ? x + ((n * g.height + iy) * g.width + ix) * channels : zeros.data();
          out[row] = rows.data() + (row * kAlpha + column) * channels;
        }
        input_rows(in, out, channels);
      }
      float* tile_out = v + local * kPositions * channels;
      for (int64_t a = 0; a < kAlpha; ++a) {
        for (int64_t column = 0; column < kAlpha; ++column) {
          in[column] = rows.data() + (a * kAlpha + column) * channels;
          out[column] = tile_out + (a * kAlpha + column) * channels;
        }
        input_rows(in, out, channels);
      }
    }
  });
}

// Output tiles [first, first + count) from m (count, 36, groups * width) into y, which is
// (groups, N, H, W, width): group k of the output channels lands in its own channels-last tensor.
void transform_output(const float* m, const Geometry& g, int64_t groups, int64_t group_width,
                      int64_t first, int64_t count, float* y) {
  const int64_t channels = groups * group_width;
  const int64_t group_stride = g.batch * g.height * g.width * group_width;
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(kTile * kAlpha * channels);  // At M, (i, column, channel)
    std::vector<float> spill(group_width);               // for rows/columns past the border
    for (int64_t local = begin; local < end; ++local) {
      const int64_t tile = first + local;
      const int64_t tx = tile % g.tiles_x;
      const int64_t ty = (tile / g.tiles_x) % g.tiles_y;
      const int64_t n = tile / (g.tiles_x * g.tiles_y);
      const float* tile_in = m + local * kPositions * channels;
      const float* in[kAlpha];
      float* out[kTile];
      for (int64_t column = 0; column < kAlpha; ++column) {
        for (int64_t a = 0; a < kAlpha; ++a) in[a] = tile_in + (a * kAlpha + column) * channels;
        for (int64_t i = 0; i < kTile; ++i) out[i] = rows.data() + (i * kAlpha + column) * channels;
        output_rows(in, out, channels);
      }
      for (int64_t i = 0; i < kTile; ++i) {
        const int64_t oy = ty * kTile + i;
        if (oy >= g.height) break;
        for (int64_t k = 0; k < groups; ++k) {
          for (int64_t column = 0; column < kAlpha; ++column) {
            in[column] = rows.data() + (i * kAlpha + column) * channels + k * group_width;
          }
          for (int64_t j = 0; j < kTile; ++j) {
            const int64_t ox = tx * kTile + j;
            out[j] = ox < g.width
                         ? y + k * group_stride + ((n * g.height + oy) * g.width + ox) * group_width
                         : spill.data();
          }
          output_rows(in, out, group_width);
        }
      }
    }
  });
}

}  // namespace

// x: (N, H, W, C) float, contiguous. weight: (36 * Cout, C, 1, 1), the transformed kernel
// (position-major). Returns (groups, N, H, W, Cout / groups).
torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups,
                      int64_t chunk_tiles) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous(),
              "x must be a contiguous float (N, H, W, C) tensor");
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) % kPositions == 0 &&
                  weight.size(1) == x.size(3),
              "weight must be (36 * Cout, C, 1, 1)");
  const int64_t channels = x.size(3);
  const int64_t out_channels = weight.size(0) / kPositions;
  TORCH_CHECK(groups >= 1 && out_channels % groups == 0, "Cout must split into the groups");
  TORCH_CHECK(chunk_tiles >= 1, "chunk_tiles must be positive");
  const Geometry g{x.size(0), x.size(1), x.size(2), (x.size(1) + kTile - 1) / kTile,
                   (x.size(2) + kTile - 1) / kTile};
  auto y = torch::empty({groups, g.batch, g.height, g.width, out_channels / groups}, x.options());
  const int64_t tiles = g.tiles();
  const int64_t chunk = std::min(chunk_tiles, tiles);
  auto v = torch::empty({chunk, kPositions, channels}, x.options());
  for (int64_t first = 0; first < tiles; first += chunk) {
    const int64_t count = std::min(chunk, tiles - first);
    auto v_used = v.narrow(0, 0, count);
    transform_input(x.data_ptr<float>(), g, channels, first, count, v_used.data_ptr<float>());
    // (count, 36, C) memory is a channels-last (1, 36 * C, count, 1) image: one grouped 1x1
    // convolution multiplies each of the 36 positions by its own (C x Cout) matrix.
    auto image = v_used.view({1, count, 1, kPositions * channels}).permute({0, 3, 1, 2});
    const std::vector<int64_t> one{1, 1}, none{0, 0};
    const torch::Tensor products =
        at::conv2d(image, weight, c10::nullopt, one, none, one, kPositions)
            .permute({0, 2, 3, 1})
            .contiguous();  // (1, count, 1, 36 * Cout); a no-op when channels-last
    transform_output(products.data_ptr<float>(), g, groups, out_channels / groups, first, count,
                     y.data_ptr<float>());
  }
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("conv3x3", &conv3x3, "Winograd F(4x4, 3x3) convolution, channels-last");
}
