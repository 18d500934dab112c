// Winograd F(m x m, 3x3) convolutions (m = 4 or 6) for channels-last float tensors (stride 1,
// zero padding 1).
//
// A 3x3 convolution computes each m x m output tile from an (m+2) x (m+2) input tile with
// (m+2)^2 multiplications per (input, output) channel pair instead of 9 m^2: 36 instead of 144
// for m = 4, 64 instead of 324 for m = 6. The tile is transformed (V = Bt d B), each transformed
// position is a plain matrix product over channels (one grouped 1x1 convolution, run by oneDNN),
// and the products are transformed back (Y = At M A). The transforms are the memory-bound part;
// they run here, tile by tile, over chunks of tiles small enough that the transformed data stays
// in cache between the three steps. The matrices are the usual ones with interpolation points
// 0, +-1, +-2 (and +-1/2 for m = 6) and infinity (Lavin & Gray, 2016).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

// The transforms along one axis, vectorised over the channels: `n` channels of each of the input
// rows in, the output rows out. Inputs and outputs never overlap; the restrict-qualified
// parameters tell the compiler so.

// F(4, 3): Bt (6 x 6).
void input_rows_4(int64_t n, const float* __restrict__ i0, const float* __restrict__ i1,
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

// F(4, 3): At (4 x 6).
void output_rows_4(int64_t n, const float* __restrict__ i0, const float* __restrict__ i1,
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

// F(6, 3): Bt (8 x 8).
void input_rows_6(int64_t n, const float* __restrict__ i0, const float* __restrict__ i1,
                  const float* __restrict__ i2, const float* __restrict__ i3,
                  const float* __restrict__ i4, const float* __restrict__ i5,
                  const float* __restrict__ i6, const float* __restrict__ i7,
                  float* __restrict__ o0, float* __restrict__ o1, float* __restrict__ o2,
                  float* __restrict__ o3, float* __restrict__ o4, float* __restrict__ o5,
                  float* __restrict__ o6, float* __restrict__ o7) {
  for (int64_t c = 0; c < n; ++c) {
    const float d0 = i0[c], d1 = i1[c], d2 = i2[c], d3 = i3[c];
    const float d4 = i4[c], d5 = i5[c], d6 = i6[c], d7 = i7[c];
    o0[c] = d0 - 5.25f * d2 + 5.25f * d4 - d6;
    const float a12 = d2 - 4.25f * d4 + d6, b12 = d1 - 4.25f * d3 + d5;
    o1[c] = a12 + b12;
    o2[c] = a12 - b12;
    const float a34 = 0.25f * d2 - 1.25f * d4 + d6, b34 = 0.5f * d1 - 2.5f * d3 + 2.0f * d5;
    o3[c] = a34 + b34;
    o4[c] = a34 - b34;
    const float a56 = 4.0f * d2 - 5.0f * d4 + d6, b56 = 2.0f * d1 - 2.5f * d3 + 0.5f * d5;
    o5[c] = a56 + b56;
    o6[c] = a56 - b56;
    o7[c] = -d1 + 5.25f * d3 - 5.25f * d5 + d7;
  }
}

// F(6, 3): At (6 x 8).
void output_rows_6(int64_t n, const float* __restrict__ i0, const float* __restrict__ i1,
                   const float* __restrict__ i2, const float* __restrict__ i3,
                   const float* __restrict__ i4, const float* __restrict__ i5,
                   const float* __restrict__ i6, const float* __restrict__ i7,
                   float* __restrict__ o0, float* __restrict__ o1, float* __restrict__ o2,
                   float* __restrict__ o3, float* __restrict__ o4, float* __restrict__ o5) {
  for (int64_t c = 0; c < n; ++c) {
    const float m0 = i0[c], m1 = i1[c], m2 = i2[c], m3 = i3[c];
    const float m4 = i4[c], m5 = i5[c], m6 = i6[c], m7 = i7[c];
    const float sum12 = m1 + m2, diff12 = m1 - m2;
    const float sum34 = m3 + m4, diff34 = m3 - m4;
    const float sum56 = m5 + m6, diff56 = m5 - m6;
    o0[c] = m0 + sum12 + sum34 + sum56;
    o1[c] = diff12 + 2.0f * diff34 + 0.5f * diff56;
    o2[c] = sum12 + 4.0f * sum34 + 0.25f * sum56;
    o3[c] = diff12 + 8.0f * diff34 + 0.125f * diff56;
    o4[c] = sum12 + 16.0f * sum34 + 0.0625f * sum56;
    o5[c] = diff12 + 32.0f * diff34 + 0.03125f * diff56 + m7;
  }
}

template <int64_t Tile>
struct Transforms;

template <>
struct Transforms<4> {
  static constexpr int64_t kAlpha = 6;
  static void input(const float* const in[], float* const out[], int64_t n) {
    input_rows_4(n, in[0], in[1], in[2], in[3], in[4], in[5], out[0], out[1], out[2], out[3],
                 out[4], out[5]);
  }
  static void output(const float* const in[], float* const out[], int64_t n) {
    output_rows_4(n, in[0], in[1], in[2], in[3], in[4], in[5], out[0], out[1], out[2], out[3]);
  }
};

template <>
struct Transforms<6> {
  static constexpr int64_t kAlpha = 8;
  static void input(const float* const in[], float* const out[], int64_t n) {
    input_rows_6(n, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], out[0], out[1],
                 out[2], out[3], out[4], out[5], out[6], out[7]);
  }
  static void output(const float* const in[], float* const out[], int64_t n) {
    output_rows_6(n, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], out[0], out[1],
                  out[2], out[3], out[4], out[5]);
  }
};

// A tile's place: image n, tile row ty, tile column tx.
struct TileAt {
  int64_t n, ty, tx;
};

struct Geometry {
  int64_t batch, height, width, tiles_y, tiles_x;
  int64_t tiles() const { return batch * tiles_y * tiles_x; }
  // Tiles are numbered column fastest, then row, then image.
  TileAt at(int64_t tile) const {
    return {tile / (tiles_x * tiles_y), (tile / tiles_x) % tiles_y, tile % tiles_x};
  }
};

// Transformed input tiles [first, first + count) of x (N, H, W, C) into v (count, alpha^2, C).
template <int64_t Tile>
void transform_input(const float* x, const Geometry& g, int64_t channels, int64_t first,
                     int64_t count, float* v) {
  constexpr int64_t kAlpha = Transforms<Tile>::kAlpha;
  constexpr int64_t kPositions = kAlpha * kAlpha;
  const std::vector<float> zeros(channels, 0.0f);
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(kPositions * channels);  // Bt d, (a, column, channel)
    for (int64_t local = begin; local < end; ++local) {
      const auto [n, ty, tx] = g.at(first + local);
      const float* in[kAlpha];
      float* out[kAlpha];
      for (int64_t column = 0; column < kAlpha; ++column) {
        const int64_t ix = tx * Tile - 1 + column;
        for (int64_t row = 0; row < kAlpha; ++row) {
          const int64_t iy = ty * Tile - 1 + row;
          const bool inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
          in[row] = inside ? x + ((n * g.height + iy) * g.width + ix) * channels : zeros.data();
          out[row] = rows.data() + (row * kAlpha + column) * channels;
        }
        Transforms<Tile>::input(in, out, channels);
      }
      float* tile_out = v + local * kPositions * channels;
      for (int64_t a = 0; a < kAlpha; ++a) {
        for (int64_t column = 0; column < kAlpha; ++column) {
          in[column] = rows.data() + (a * kAlpha + column) * channels;
          out[column] = tile_out + (a * kAlpha + column) * channels;
        }
        Transforms<Tile>::input(in, out, channels);
      }
    }
  });
}

// Output tiles [first, first + count) from m (count, alpha^2, groups * width) into y, which is
// (groups, N, H, W, width): group k of the output channels lands in its own channels-last tensor.
template <int64_t Tile>
void transform_output(const float* m, const Geometry& g, int64_t groups, int64_t group_width,
                      int64_t first, int64_t count, float* y) {
  constexpr int64_t kAlpha = Transforms<Tile>::kAlpha;
  constexpr int64_t kPositions = kAlpha * kAlpha;
  const int64_t channels = groups * group_width;
  const int64_t group_stride = g.batch * g.height * g.width * group_width;
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(Tile * kAlpha * channels);  // At M, (i, column, channel)
    std::vector<float> spill(group_width);              // for rows/columns past the border
    for (int64_t local = begin; local < end; ++local) {
      const auto [n, ty, tx] = g.at(first + local);
      const float* tile_in = m + local * kPositions * channels;
      const float* in[kAlpha];
      float* out[Tile];
      for (int64_t column = 0; column < kAlpha; ++column) {
        for (int64_t a = 0; a < kAlpha; ++a) in[a] = tile_in + (a * kAlpha + column) * channels;
        for (int64_t i = 0; i < Tile; ++i) out[i] = rows.data() + (i * kAlpha + column) * channels;
        Transforms<Tile>::output(in, out, channels);
      }
      for (int64_t i = 0; i < Tile; ++i) {
        const int64_t oy = ty * Tile + i;
        if (oy >= g.height) break;
        for (int64_t k = 0; k < groups; ++k) {
          for (int64_t column = 0; column < kAlpha; ++column) {
            in[column] = rows.data() + (i * kAlpha + column) * channels + k * group_width;
          }
          for (int64_t j = 0; j < Tile; ++j) {
            const int64_t ox = tx * Tile + j;
            out[j] = ox < g.width
                         ? y + k * group_stride + ((n * g.height + oy) * g.width + ox) * group_width
                         : spill.data();
          }
          Transforms<Tile>::output(in, out, group_width);
        }
      }
    }
  });
}

template <int64_t Tile>
torch::Tensor conv3x3_tiled(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups,
                            int64_t chunk_tiles) {
  constexpr int64_t kPositions = Transforms<Tile>::kAlpha * Transforms<Tile>::kAlpha;
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) % kPositions == 0 &&
                  weight.size(1) == x.size(3),
              "weight must be ((tile + 2)^2 * Cout, C, 1, 1)");
  const int64_t channels = x.size(3);
  const int64_t out_channels = weight.size(0) / kPositions;
  TORCH_CHECK(groups >= 1 && out_channels % groups == 0, "Cout must split into the groups");
  TORCH_CHECK(chunk_tiles >= 1, "chunk_tiles must be positive");
  const Geometry g{x.size(0), x.size(1), x.size(2), (x.size(1) + Tile - 1) / Tile,
                   (x.size(2) + Tile - 1) / Tile};
  auto y = torch::empty({groups, g.batch, g.height, g.width, out_channels / groups}, x.options());
  const int64_t tiles = g.tiles();
  const int64_t chunk = std::min(chunk_tiles, tiles);
  auto v = torch::empty({chunk, kPositions, channels}, x.options());
  for (int64_t first = 0; first < tiles; first += chunk) {
    const int64_t count = std::min(chunk, tiles - first);
    auto v_used = v.narrow(0, 0, count);
    transform_input<Tile>(x.data_ptr<float>(), g, channels, first, count,
                          v_used.data_ptr<float>());
    // (count, P, C) memory is a channels-last (1, P * C, count, 1) image: one grouped 1x1
    // convolution multiplies each of the P positions by its own (C x Cout) matrix.
    auto image = v_used.view({1, count, 1, kPositions * channels}).permute({0, 3, 1, 2});
    const std::vector<int64_t> one{1, 1}, none{0, 0};
    const torch::Tensor products =
        at::conv2d(image, weight, c10::nullopt, one, none, one, kPositions)
            .permute({0, 2, 3, 1})
            .contiguous();  // (1, count, 1, P * Cout); a no-op when channels-last
    transform_output<Tile>(products.data_ptr<float>(), g, groups, out_channels / groups, first,
                           count, y.data_ptr<float>());
  }
  return y;
}

}  // namespace

// x: (N, H, W, C) float, contiguous. weight: ((tile + 2)^2 * Cout, C, 1, 1), the transformed
// kernel (position-major). Returns (groups, N, H, W, Cout / groups).
torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& weight, int64_t groups,
                      int64_t chunk_tiles, int64_t tile) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.is_contiguous(),
              "x must be a contiguous float (N, H, W, C) tensor");
  TORCH_CHECK(tile == 4 || tile == 6, "tile must be 4 or 6");
  return tile == 4 ? conv3x3_tiled<4>(x, weight, groups, chunk_tiles)
                   : conv3x3_tiled<6>(x, weight, groups, chunk_tiles);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("conv3x3", &conv3x3, "Winograd F(m x m, 3x3) convolution, channels-last");
}
