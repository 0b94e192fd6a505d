#include "toyworld/world.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>

#include "core/error.h"

namespace clipguide::toyworld {

namespace {

constexpr float kPi = 3.14159265358979f;
constexpr int kSamples = 4;  // per pixel side: 16 samples per pixel
constexpr float kRadius[kSizes] = {8.f, 14.f};
constexpr float kJitter = 2.f;  // centre jitter, pixels
constexpr float kTint = 12.f;   // colour jitter, [0, 255] units

template <typename E>
E pick(std::mt19937_64& rng, int n) {
  return static_cast<E>(std::uniform_int_distribution<int>(0, n - 1)(rng));
}

std::array<float, 2> centre(Position p) {
  constexpr float lo = 17, mid = 32, hi = 47;
  switch (p) {
    case Position::Centre:
      return {mid, mid};
    case Position::Left:
      return {lo, mid};
    case Position::Right:
      return {hi, mid};
    case Position::Top:
      return {mid, lo};
    case Position::Bottom:
      return {mid, hi};
    case Position::TopLeft:
      return {lo, lo};
    case Position::TopRight:
      return {hi, lo};
    case Position::BottomLeft:
      return {lo, hi};
    case Position::BottomRight:
      return {hi, hi};
  }
  return {mid, mid};
}

// Crossing-number test against a polygon given as x0, y0, x1, y1, ...
bool inside_polygon(float u, float v, const std::vector<float>& poly) {
  bool in = false;
  const size_t n = poly.size() / 2;
  for (size_t i = 0, j = n - 1; i < n; j = i++) {
    const float xi = poly[2 * i], yi = poly[2 * i + 1], xj = poly[2 * j], yj = poly[2 * j + 1];
    if ((yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi) in = !in;
  }
  return in;
}

std::vector<float> regular_polygon(int points, float outer, float inner) {
  std::vector<float> poly;
  const int n = inner > 0 ? 2 * points : points;
  for (int k = 0; k < n; ++k) {
    const float a =
        -kPi / 2 + 2 * kPi * static_cast<float>(k) / static_cast<float>(n);  // first vertex at the top
    const float r = (inner > 0 && k % 2 == 1) ? inner : outer;
    poly.push_back(r * std::cos(a));
    poly.push_back(r * std::sin(a));  // image y grows downwards
  }
  return poly;
}

// Whether (u, v), in units of the object's radius around its centre, lies inside the shape.
bool inside(Shape shape, float u, float v) {
  static const std::vector<float> triangle = regular_polygon(3, 1.05f, 0),
                                  star = regular_polygon(5, 1.05f, 0.45f);
  switch (shape) {
    case Shape::Circle:
      return u * u + v * v <= 1.f;
    case Shape::Square:
      return std::max(std::abs(u), std::abs(v)) <= 0.82f;
    case Shape::Triangle:
      return inside_polygon(u, v + 0.2f, triangle);  // centred on its bounding box
    case Shape::Star:
      return inside_polygon(u, v + 0.05f, star);
    case Shape::Ring: {
      const float r2 = u * u + v * v;
      return r2 <= 1.f && r2 >= 0.55f * 0.55f;
    }
    case Shape::Cross:
      return (std::abs(u) <= 0.3f && std::abs(v) <= 0.95f) || (std::abs(v) <= 0.3f && std::abs(u) <= 0.95f);
  }
  return false;
}

std::array<float, 3> tint_draw(std::mt19937_64& rng) {
  std::uniform_real_distribution<float> d(-kTint, kTint);
  return {d(rng), d(rng), d(rng)};
}

Object random_object(std::mt19937_64& rng, Colour background, bool allow_held_out) {
  Object o;
  do {
    o.colour = pick<Colour>(rng, kColours);
    o.shape = pick<Shape>(rng, kShapes);
  } while (o.colour == background || (!allow_held_out && is_held_out(o.colour, o.shape)));
  o.size = pick<Size>(rng, kSizes);
  o.position = pick<Position>(rng, kPositions);
  std::uniform_real_distribution<float> j(-kJitter, kJitter);
  o.dx = j(rng);
  o.dy = j(rng);
  o.tint = tint_draw(rng);
  return o;
}

bool overlap(const Object& a, const Object& b) {
  const auto ca = centre(a.position), cb = centre(b.position);
  const float d = std::hypot(ca[0] + a.dx - cb[0] - b.dx, ca[1] + a.dy - cb[1] - b.dy);
  return d < kRadius[static_cast<int>(a.size)] + kRadius[static_cast<int>(b.size)] + 2;
}

bool object_matches(const ObjectClaim& c, const Object& o) {
  return (!c.colour || *c.colour == o.colour) && (!c.shape || *c.shape == o.shape) &&
         (!c.size || *c.size == o.size) && (!c.position || *c.position == o.position);
}

}  // namespace

const std::string& name(Colour c) {
  static const std::string names[kColours] = {"red",    "green",  "blue",  "yellow",
                                              "purple", "orange", "white", "black"};
  return names[static_cast<int>(c)];
}
const std::string& name(Shape s) {
  static const std::string names[kShapes] = {"circle", "square", "triangle", "star", "ring", "cross"};
  return names[static_cast<int>(s)];
}
const std::string& name(Size s) {
  static const std::string names[kSizes] = {"small", "large"};
  return names[static_cast<int>(s)];
}
const std::string& name(Position p) {
  static const std::string names[kPositions] = {
      "centre", "left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right"};
  return names[static_cast<int>(p)];
}
const std::string& phrase(Position p) {
  static const std::string phrases[kPositions] = {"in the centre",
                                                  "on the left",
                                                  "on the right",
                                                  "at the top",
                                                  "at the bottom",
                                                  "in the top left corner",
                                                  "in the top right corner",
                                                  "in the bottom left corner",
                                                  "in the bottom right corner"};
  return phrases[static_cast<int>(p)];
}

std::array<float, 3> rgb(Colour c) {
  static const std::array<float, 3> table[kColours] = {{215, 40, 40},   {40, 160, 60},  {45, 75, 215},
                                                       {235, 215, 50},  {135, 60, 175}, {240, 135, 35},
                                                       {240, 240, 240}, {25, 25, 25}};
  return table[static_cast<int>(c)];
}

const std::vector<std::pair<Colour, Shape>>& held_out_pairs() {
  static const std::vector<std::pair<Colour, Shape>> pairs = {
      {Colour::Purple, Shape::Star}, {Colour::Orange, Shape::Ring}, {Colour::White, Shape::Triangle},
      {Colour::Green, Shape::Cross}, {Colour::Red, Shape::Square},  {Colour::Blue, Shape::Circle}};
  return pairs;
}

bool is_held_out(Colour c, Shape s) {
  for (const auto& [hc, hs] : held_out_pairs()) {
    if (hc == c && hs == s) return true;
  }
  return false;
}

Scene sample_scene(std::mt19937_64& rng, const SceneOptions& options) {
  Scene scene;
  scene.background = pick<Colour>(rng, kColours);
  scene.tint = tint_draw(rng);
  scene.objects.push_back(random_object(rng, scene.background, options.allow_held_out));
  if (std::uniform_real_distribution<double>(0, 1)(rng) < options.two_object_rate) {
    Object second;
    do {
      second = random_object(rng, scene.background, options.allow_held_out);
    } while (second.position == scene.objects[0].position || overlap(second, scene.objects[0]));
    scene.objects.push_back(second);
  }
  return scene;
}

Scene single_object_scene(Colour background, Colour colour, Shape shape, Size size, Position position,
                          std::mt19937_64& rng) {
  if (background == colour)
    fail("toy world: an object cannot have the background's colour (", name(colour), ")");
  Scene scene;
  scene.background = background;
  scene.tint = tint_draw(rng);
  Object o = random_object(rng, background, true);
  o.colour = colour;
  o.shape = shape;
  o.size = size;
  o.position = position;
  scene.objects.push_back(o);
  return scene;
}

Scene random_single_object(Colour colour, Shape shape, std::mt19937_64& rng) {
  Colour background;
  do {
    background = pick<Colour>(rng, kColours);
  } while (background == colour);
  const auto size = pick<Size>(rng, kSizes);
  const auto position = pick<Position>(rng, kPositions);
  return single_object_scene(background, colour, shape, size, position, rng);
}

torch::Tensor render(const Scene& scene) {
  const int64_t n = kImageSize;
  torch::Tensor out = torch::empty({3, n, n});
  auto px = out.accessor<float, 3>();
  const auto bg = rgb(scene.background);
  for (int64_t c = 0; c < 3; ++c) out[c].fill_(std::clamp(bg[c] + scene.tint[c], 0.f, 255.f) / 255.f);
  for (const Object& o : scene.objects) {
    const auto col = rgb(o.colour);
    const auto at = centre(o.position);
    const float cx = at[0] + o.dx, cy = at[1] + o.dy, r = kRadius[static_cast<int>(o.size)];
    const int64_t x0 = std::max<int64_t>(0, static_cast<int64_t>(cx - r - 2)),
                  x1 = std::min<int64_t>(n, static_cast<int64_t>(cx + r + 3));
    const int64_t y0 = std::max<int64_t>(0, static_cast<int64_t>(cy - r - 2)),
                  y1 = std::min<int64_t>(n, static_cast<int64_t>(cy + r + 3));
    float value[3];
    for (int64_t c = 0; c < 3; ++c) value[c] = std::clamp(col[c] + o.tint[c], 0.f, 255.f) / 255.f;
    for (int64_t y = y0; y < y1; ++y) {
      for (int64_t x = x0; x < x1; ++x) {
        int hits = 0;
        for (int sy = 0; sy < kSamples; ++sy) {
          for (int sx = 0; sx < kSamples; ++sx) {
            const float u = (static_cast<float>(x) + (sx + 0.5f) / kSamples - cx) / r;
            const float v = (static_cast<float>(y) + (sy + 0.5f) / kSamples - cy) / r;
            hits += inside(o.shape, u, v) ? 1 : 0;
          }
        }
        if (hits == 0) continue;
        const float a = static_cast<float>(hits) / (kSamples * kSamples);  // coverage: the anti-aliased edge
        for (int64_t c = 0; c < 3; ++c) px[c][y][x] = (1 - a) * px[c][y][x] + a * value[c];
      }
    }
  }
  return out;
}

torch::Tensor render_batch(const std::vector<Scene>& scenes) {
  const auto count = static_cast<int64_t>(scenes.size());
  torch::Tensor out = torch::empty({count, 3, kImageSize, kImageSize});
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i].copy_(render(scenes[static_cast<size_t>(i)]));
  });
  return out;
}

bool matches(const Claim& claim, const Scene& scene) {
  if (claim.background && *claim.background != scene.background) return false;
  const auto& objs = scene.objects;
  if (claim.objects.size() > objs.size()) return false;
  if (claim.objects.size() == 1) {
    return std::any_of(objs.begin(), objs.end(),
                       [&](const Object& o) { return object_matches(claim.objects[0], o); });
  }
  if (claim.objects.size() == 2) {
    return (object_matches(claim.objects[0], objs[0]) && object_matches(claim.objects[1], objs[1])) ||
           (object_matches(claim.objects[0], objs[1]) && object_matches(claim.objects[1], objs[0]));
  }
  return claim.objects.empty();
}

Caption describe(const Scene& scene, int form, std::mt19937_64& rng) {
  if (form < 0) form = std::uniform_int_distribution<int>(0, kTemplates - 1)(rng);
  Caption cap;
  const std::string& bg = name(scene.background);
  if (scene.objects.size() == 2) {
    // "a red circle and a white square", optionally "... on a blue background"; objects in either order.
    const bool swap = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
    const Object& a = scene.objects[swap ? 1 : 0];
    const Object& b = scene.objects[swap ? 0 : 1];
    cap.text = cat("a ", name(a.colour), " ", name(a.shape), " and a ", name(b.colour), " ", name(b.shape));
    cap.claim.objects = {{a.colour, a.shape, {}, {}}, {b.colour, b.shape, {}, {}}};
    if (form % 2 == 0) {
      cap.text += cat(" on a ", bg, " background");
      cap.claim.background = scene.background;
    }
    return cap;
  }
  const Object& o = scene.objects.at(0);
  const std::string &c = name(o.colour), &s = name(o.shape), &z = name(o.size), &p = phrase(o.position);
  ObjectClaim oc;
  switch (form) {
    case 0:
      cap.text = cat("a ", c, " ", s, " on a ", bg, " background");
      oc = {o.colour, o.shape, {}, {}};
      cap.claim.background = scene.background;
      break;
    case 1:
      cap.text = cat(z, " ", c, " ", s, " ", p, ", ", bg, " background");
      oc = {o.colour, o.shape, o.size, o.position};
      cap.claim.background = scene.background;
      break;
    case 2:
      cap.text = cat("a ", z, " ", c, " ", s, " on ", bg);
      oc = {o.colour, o.shape, o.size, {}};
      cap.claim.background = scene.background;
      break;
    case 3:
      cap.text = cat(bg, " background with a ", c, " ", s, " ", p);
      oc = {o.colour, o.shape, {}, o.position};
      cap.claim.background = scene.background;
      break;
    case 4:
      cap.text = cat("a ", c, " ", s);
      oc = {o.colour, o.shape, {}, {}};
      break;
    case 5:
      cap.text = cat("a ", s, " on a ", bg, " background");
      oc = {{}, o.shape, {}, {}};
      cap.claim.background = scene.background;
      break;
    case 6:
      cap.text = cat("a ", c, " shape on a ", bg, " background");
      oc = {o.colour, {}, {}, {}};
      cap.claim.background = scene.background;
      break;
    default:
      cap.text = cat("a ", z, " ", c, " ", s);
      oc = {o.colour, o.shape, o.size, {}};
      break;
  }
  cap.claim.objects = {oc};
  return cap;
}

std::string prompt_for(Colour colour, Shape shape, std::optional<Colour> background) {
  if (!background) return cat("a ", name(colour), " ", name(shape));
  return cat("a ", name(colour), " ", name(shape), " on a ", name(*background), " background");
}

// ---- the pixel judge ----

Colour nearest_colour(const std::array<float, 3>& v) {
  Colour best = Colour::Red;
  float best_d = std::numeric_limits<float>::max();
  for (int k = 0; k < kColours; ++k) {
    const auto c = rgb(static_cast<Colour>(k));
    const float d =
        (v[0] - c[0]) * (v[0] - c[0]) + (v[1] - c[1]) * (v[1] - c[1]) + (v[2] - c[2]) * (v[2] - c[2]);
    if (d < best_d) {
      best_d = d;
      best = static_cast<Colour>(k);
    }
  }
  return best;
}

namespace {

struct Features {
  double fill = 0, solidity = 0, turn = 0;
  bool hole = false;
};

double cross(const std::array<double, 2>& o, const std::array<double, 2>& a, const std::array<double, 2>& b) {
  return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

// Area of the convex hull of the pixels' corners (Andrew's monotone chain, then the shoelace formula).
double hull_area(std::vector<std::array<double, 2>> pts) {
  std::sort(pts.begin(), pts.end());
  pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
  if (pts.size() < 3) return 0;
  std::vector<std::array<double, 2>> hull(2 * pts.size());
  size_t k = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    while (k >= 2 && cross(hull[k - 2], hull[k - 1], pts[i]) <= 0) --k;
    hull[k++] = pts[i];
  }
  for (size_t i = pts.size() - 1, t = k + 1; i > 0; --i) {
    while (k >= t && cross(hull[k - 2], hull[k - 1], pts[i - 1]) <= 0) --k;
    hull[k++] = pts[i - 1];
  }
  hull.resize(k - 1);
  double area = 0;
  for (size_t i = 0; i < hull.size(); ++i) {
    const auto& a = hull[i];
    const auto& b = hull[(i + 1) % hull.size()];
    area += a[0] * b[1] - b[0] * a[1];
  }
  return std::abs(area) / 2;
}

// Geometry of a region given as a mask [h * w].
Features features(const std::vector<uint8_t>& mask, int64_t h, int64_t w) {
  int64_t area = 0, x0 = w, x1 = -1, y0 = h, y1 = -1;
  std::vector<std::array<double, 2>> corners;
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      if (!mask[y * w + x]) continue;
      ++area;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      // Only pixels on the region's edge can be hull corners.
      const bool edge = x == 0 || y == 0 || x == w - 1 || y == h - 1 || !mask[y * w + x - 1] ||
                        !mask[y * w + x + 1] || !mask[(y - 1) * w + x] || !mask[(y + 1) * w + x];
      if (edge) {
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx)
            corners.push_back({static_cast<double>(x + dx), static_cast<double>(y + dy)});
        }
      }
    }
  }
  Features f;
  if (area == 0) return f;
  f.fill = static_cast<double>(area) / static_cast<double>((x1 - x0 + 1) * (y1 - y0 + 1));
  f.solidity = static_cast<double>(area) / std::max(1.0, hull_area(std::move(corners)));
  // Quarter-turn symmetry: the share of the region still on it when turned 90 degrees about its centroid (a
  // circle, square, ring or cross keeps nearly all of it; a triangle or a five-pointed star does not).
  double cx = 0, cy = 0;
  for (int64_t y = y0; y <= y1; ++y) {
    for (int64_t x = x0; x <= x1; ++x) {
      if (mask[y * w + x]) cx += static_cast<double>(x), cy += static_cast<double>(y);
    }
  }
  cx /= static_cast<double>(area), cy /= static_cast<double>(area);
  int64_t kept = 0;
  for (int64_t y = y0; y <= y1; ++y) {
    for (int64_t x = x0; x <= x1; ++x) {
      if (!mask[y * w + x]) continue;
      const auto tx = static_cast<int64_t>(std::lround(cx - (static_cast<double>(y) - cy)));
      const auto ty = static_cast<int64_t>(std::lround(cy + (static_cast<double>(x) - cx)));
      kept += tx >= 0 && ty >= 0 && tx < w && ty < h && mask[ty * w + tx] ? 1 : 0;
    }
  }
  f.turn = static_cast<double>(kept) / static_cast<double>(area);
  // Holes: pixels inside the bounding box, outside the region, that cannot reach the box's edge.
  const int64_t bw = x1 - x0 + 3, bh = y1 - y0 + 3;  // the box grown by one pixel on each side
  std::vector<uint8_t> seen(static_cast<size_t>(bw * bh), 0);
  auto in_region = [&](int64_t bx, int64_t by) {
    const int64_t x = bx + x0 - 1, y = by + y0 - 1;
    return x >= 0 && y >= 0 && x < w && y < h && mask[y * w + x];
  };
  std::vector<int64_t> stack = {0};
  seen[0] = 1;
  while (!stack.empty()) {
    const int64_t i = stack.back();
    stack.pop_back();
    const int64_t bx = i % bw, by = i / bw;
    const int64_t nx[4] = {bx - 1, bx + 1, bx, bx}, ny[4] = {by, by, by - 1, by + 1};
    for (int k = 0; k < 4; ++k) {
      if (nx[k] < 0 || ny[k] < 0 || nx[k] >= bw || ny[k] >= bh) continue;
      const int64_t j = ny[k] * bw + nx[k];
      if (seen[j] || in_region(nx[k], ny[k])) continue;
      seen[j] = 1;
      stack.push_back(j);
    }
  }
  int64_t enclosed = 0;
  for (int64_t by = 0; by < bh; ++by) {
    for (int64_t bx = 0; bx < bw; ++bx) enclosed += (!seen[by * bw + bx] && !in_region(bx, by)) ? 1 : 0;
  }
  f.hole = enclosed >= std::max<int64_t>(3, area / 12);
  return f;
}

struct Prototype {
  Shape shape;
  Features f;
};

// The 4-connected components of `mask` [h * w]: each pixel's component (-1 outside the mask) and each one's
// size.
struct Components {
  std::vector<int32_t> label;
  std::vector<int64_t> size;
};

Components components(const std::vector<uint8_t>& mask, int64_t h, int64_t w) {
  Components out;
  out.label.assign(mask.size(), -1);
  for (int64_t start = 0; start < h * w; ++start) {
    if (!mask[start] || out.label[start] >= 0) continue;
    const auto id = static_cast<int32_t>(out.size.size());
    out.size.push_back(0);
    std::vector<int64_t> stack = {start};
    out.label[start] = id;
    while (!stack.empty()) {
      const int64_t i = stack.back();
      stack.pop_back();
      ++out.size.back();
      const int64_t x = i % w, y = i / w;
      const int64_t nb[4] = {x > 0 ? i - 1 : -1, x < w - 1 ? i + 1 : -1, y > 0 ? i - w : -1,
                             y < h - 1 ? i + w : -1};
      for (int64_t k : nb) {
        if (k >= 0 && mask[k] && out.label[k] < 0) {
          out.label[k] = id;
          stack.push_back(k);
        }
      }
    }
  }
  return out;
}

// Each shape rendered at both sizes in the centre, white on black, area-averaged to a side of `side` px when
// that is under the world's 64 (so a small image is judged against shapes pixelated as its own are), and cut
// where the shape covers at least half a pixel.
std::vector<Prototype> make_prototypes(int64_t side) {
  // Below 64 px the pixelation depends on where the shape falls within a pixel: shifts of a quarter pixel
  // each way.
  const int phases = side < kImageSize ? 4 : 1;
  const float step = static_cast<float>(kImageSize) / static_cast<float>(side * phases);
  std::vector<Prototype> out;
  for (int s = 0; s < kShapes; ++s) {
    for (int z = 0; z < kSizes; ++z) {
      for (int py = 0; py < phases; ++py) {
        for (int px = 0; px < phases; ++px) {
          Scene scene;
          scene.background = Colour::Black;
          Object o;
          o.colour = Colour::White;
          o.shape = static_cast<Shape>(s);
          o.size = static_cast<Size>(z);
          o.dx = step * static_cast<float>(px);
          o.dy = step * static_cast<float>(py);
          scene.objects.push_back(o);
          torch::Tensor img = render(scene);
          if (side < kImageSize) img = torch::adaptive_avg_pool2d(img.unsqueeze(0), {side, side})[0];
          const torch::Tensor m = (img[0] >= 0.5f).to(torch::kUInt8).contiguous();
          std::vector<uint8_t> mask(m.data_ptr<uint8_t>(), m.data_ptr<uint8_t>() + m.numel());
          out.push_back({o.shape, features(mask, img.size(1), img.size(2))});
        }
      }
    }
  }
  return out;
}

const std::vector<Prototype>& prototypes(int64_t side) {
  static std::mutex lock;
  static std::map<int64_t, std::vector<Prototype>> cache;
  const int64_t key = std::min<int64_t>(side, kImageSize);
  const std::lock_guard<std::mutex> hold(lock);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make_prototypes(key)).first;
  return it->second;
}

}  // namespace

Judgement judge(const torch::Tensor& image) {
  TORCH_CHECK(image.dim() == 3 && image.size(0) == 3, "judge expects a [3, H, W] image");
  const torch::Tensor img = (image.detach().to(torch::kCPU, torch::kFloat).clamp(0, 1) * 255).contiguous();
  const int64_t h = img.size(1), w = img.size(2);
  auto px = img.accessor<float, 3>();
  // The border: the outermost two pixels all round.
  std::vector<float> border[3];
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      if (y >= 2 && x >= 2 && y < h - 2 && x < w - 2) continue;
      for (int c = 0; c < 3; ++c) border[c].push_back(px[c][y][x]);
    }
  }
  std::array<float, 3> bg{};
  for (int c = 0; c < 3; ++c) {
    auto mid = border[c].begin() + static_cast<std::ptrdiff_t>(border[c].size() / 2);
    std::nth_element(border[c].begin(), mid, border[c].end());
    bg[c] = *mid;
  }
  Judgement j;
  j.background = nearest_colour(bg);
  auto distance2 = [&](int64_t i, const std::array<float, 3>& from) {
    float d2 = 0;
    for (int c = 0; c < 3; ++c) d2 += (px[c][i / w][i % w] - from[c]) * (px[c][i / w][i % w] - from[c]);
    return d2;
  };
  // Pixels unlike the background, then their largest 4-connected region.
  constexpr float kFar = 70.f;
  std::vector<uint8_t> far(static_cast<size_t>(h * w), 0);
  for (int64_t i = 0; i < h * w; ++i) far[i] = distance2(i, bg) > kFar * kFar ? 1 : 0;
  const Components regions = components(far, h, w);
  const auto largest = std::max_element(regions.size.begin(), regions.size.end());
  if (largest == regions.size.end() || *largest < 12) return j;
  const auto best_label = static_cast<int32_t>(largest - regions.size.begin());
  j.found_object = true;
  j.object_pixels = *largest;
  int64_t farthest = -1;
  float farthest_d2 = -1;
  for (int64_t i = 0; i < h * w; ++i) {
    if (regions.label[i] != best_label) continue;
    const float d2 = distance2(i, bg);
    if (d2 > farthest_d2) farthest = i, farthest_d2 = d2;
  }
  // The object's colour: the mean of the region's core, the pixels at least 70% as far from the background as
  // its farthest (its edges, part background, would pull a small object's mean toward the background's
  // colour).
  const float core = 0.49f * farthest_d2;
  std::array<double, 3> core_sum{};
  int64_t core_n = 0;
  for (int64_t i = 0; i < h * w; ++i) {
    if (regions.label[i] != best_label || distance2(i, bg) < core) continue;
    for (int c = 0; c < 3; ++c) core_sum[c] += px[c][i / w][i % w];
    ++core_n;
  }
  std::array<float, 3> object{};
  for (int c = 0; c < 3; ++c) object[c] = static_cast<float>(core_sum[c] / static_cast<double>(core_n));
  j.colour = nearest_colour(object);
  // The shape's mask, cut as the prototypes are: the pixels the object covers at least half of, whatever its
  // contrast with the background, a pixel's coverage being the projection of (pixel - background) onto
  // (object - background).
  std::array<float, 3> along{};
  float along2 = 0;
  for (int c = 0; c < 3; ++c) {
    along[c] = object[c] - bg[c];
    along2 += along[c] * along[c];
  }
  std::vector<uint8_t> covered(static_cast<size_t>(h * w), 0);
  for (int64_t i = 0; i < h * w; ++i) {
    float dot = 0;
    for (int c = 0; c < 3; ++c) dot += (px[c][i / w][i % w] - bg[c]) * along[c];
    covered[i] = dot >= 0.5f * along2 ? 1 : 0;
  }
  // The half-covered piece around the region's farthest pixel (the region itself if even that is under half
  // covered).
  const Components pieces = components(covered, h, w);
  std::vector<uint8_t> mask(static_cast<size_t>(h * w), 0);
  for (int64_t i = 0; i < h * w; ++i) {
    mask[i] = covered[farthest] ? pieces.label[i] == pieces.label[farthest] : regions.label[i] == best_label;
  }
  const Features f = features(mask, h, w);
  j.fill = f.fill;
  j.solidity = f.solidity;
  j.turn = f.turn;
  j.hole = f.hole;
  double best_d = std::numeric_limits<double>::max();
  for (const Prototype& p : prototypes(std::min(h, w))) {
    const double d = (f.fill - p.f.fill) * (f.fill - p.f.fill) +
                     (f.solidity - p.f.solidity) * (f.solidity - p.f.solidity) +
                     (f.turn - p.f.turn) * (f.turn - p.f.turn) + (f.hole != p.f.hole ? 1.0 : 0.0);
    if (d < best_d) {
      best_d = d;
      j.shape = p.shape;
    }
  }
  return j;
}

}  // namespace clipguide::toyworld
