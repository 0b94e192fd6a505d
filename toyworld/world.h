// The toy world: 64×64 scenes of coloured shapes on a coloured background, with captions from a small
// grammar. It is the data the bundled toy CLIP and toy VQGAN are trained on and the world their tests and
// benchmarks measure in. Seeded and endless: a scene is drawn from a std::mt19937_64, rendered anti-aliased
// (4×4 samples per pixel), and described in one of several phrasings.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace clipguide::toyworld {

constexpr int64_t kImageSize = 64;

enum class Colour { Red, Green, Blue, Yellow, Purple, Orange, White, Black };
enum class Shape { Circle, Square, Triangle, Star, Ring, Cross };
enum class Size { Small, Large };
enum class Position { Centre, Left, Right, Top, Bottom, TopLeft, TopRight, BottomLeft, BottomRight };

constexpr int kColours = 8, kShapes = 6, kSizes = 2, kPositions = 9;

const std::string& name(Colour c);
const std::string& name(Shape s);
const std::string& name(Size s);
const std::string& name(Position p);
// The phrase for a position: "in the top left corner", "on the left", "at the top", "in the centre".
const std::string& phrase(Position p);
// The colour's RGB in [0, 255].
std::array<float, 3> rgb(Colour c);

struct Object {
  Colour colour = Colour::Red;
  Shape shape = Shape::Circle;
  Size size = Size::Large;
  Position position = Position::Centre;
  float dx = 0, dy = 0;         // jitter of the centre, pixels
  std::array<float, 3> tint{};  // colour jitter, [0, 255] units
};

struct Scene {
  Colour background = Colour::Blue;
  std::vector<Object> objects;  // one or two; none has the background's colour
  std::array<float, 3> tint{};  // the background's colour jitter, [0, 255] units
};

// Colour+shape pairs that never appear in training (compositional zero-shot generalisation is measured on
// them).
const std::vector<std::pair<Colour, Shape>>& held_out_pairs();
bool is_held_out(Colour c, Shape s);

struct SceneOptions {
  double two_object_rate = 0.25;
  bool allow_held_out = false;  // training: false; evaluation of held-out pairs: true
};

// A random scene; with allow_held_out false, no object is a held-out pair.
Scene sample_scene(std::mt19937_64& rng, const SceneOptions& options = {});
// One object at the given attributes (random jitter and tint), for evaluation and reranking.
Scene single_object_scene(Colour background, Colour colour, Shape shape, Size size, Position position,
                          std::mt19937_64& rng);
// One object of this colour and shape on a random other background, at a random size and position.
Scene random_single_object(Colour colour, Shape shape, std::mt19937_64& rng);

// [3, 64, 64] float in [0, 1].
torch::Tensor render(const Scene& scene);
// [B, 3, 64, 64]: the scenes rendered on libtorch's intra-op threads (the same pixels as render, one at a
// time).
torch::Tensor render_batch(const std::vector<Scene>& scenes);

// What a caption claims: each attribute it names. A scene matches when its background agrees and its objects
// can be paired one to one with the claimed ones.
struct ObjectClaim {
  std::optional<Colour> colour;
  std::optional<Shape> shape;
  std::optional<Size> size;
  std::optional<Position> position;
};
struct Claim {
  std::optional<Colour> background;
  std::vector<ObjectClaim> objects;
};
bool matches(const Claim& claim, const Scene& scene);

struct Caption {
  std::string text;
  Claim claim;
};
constexpr int kTemplates = 8;
// The scene described with template `form` (0 .. kTemplates - 1; -1 picks one at random). Two-object scenes
// are described with the two-object forms whatever `form` is.
Caption describe(const Scene& scene, int form, std::mt19937_64& rng);

// The canonical single-object prompt, "a red circle on a blue background".
std::string prompt_for(Colour colour, Shape shape, std::optional<Colour> background);

// ---- the pixel judge: what an image shows, without CLIP ----

struct Judgement {
  Colour background = Colour::Black;
  bool found_object = false;
  Colour colour = Colour::Black;
  Shape shape = Shape::Circle;
  int64_t object_pixels = 0;
  double fill = 0, solidity = 0;  // area / bounding box, area / convex hull
  double turn = 0;                // share of the region kept by a quarter turn about its centroid
  bool hole = false;
};
// Judges a [3, H, W] image in [0, 1]: the background is the nearest named colour to the border pixels'
// median; the object is the largest 4-connected region of pixels far from the background colour, named by the
// mean colour of its core (its pixels at least 70% as far from the background as its farthest); its shape is
// read from the pixels it covers at least half of (whatever its contrast with the background): the nearest
// prototype in (fill ratio, solidity, quarter-turn symmetry, hole) among the six shapes rendered at both
// sizes and pixelated as the image is (area-averaged to its side, at quarter-pixel shifts, when that is under
// 64 px).
Judgement judge(const torch::Tensor& image);
Colour nearest_colour(const std::array<float, 3>& rgb255);

}  // namespace clipguide::toyworld
