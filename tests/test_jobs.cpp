// The generate job as a library user calls it: the request's JSON round trip and checks, and a run through
// generate() that a callback stops and a resume finishes exactly as a run never stopped.
#include "core/error.h"
#include "fixtures.h"
#include "io/image.h"
#include "jobs/generate.h"

namespace clipguide::test {
namespace {

// A small pixels run guided by the fixture ViT CLIP, writing into `dir`.
GenerateRequest pixels_request(const TempDir& dir) {
  const std::shared_ptr<LoadedClip> clip = fixture_vit_clip();
  GenerateRequest r;
  r.clip_models = {{clip->path, 1.0, 0}};
  r.clip.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
  r.clip.text_heads = clip->model->config().transformer_heads;
  r.generator = "pixels";
  r.prompt = read_json(fixtures() / "clip" / "clip-manifest.json")["prompts"][0].get<std::string>();
  r.width = r.height = 16;
  r.cutn = 2;
  r.steps = 6;
  r.seed = 5;
  r.output = (dir / "out.png").string();
  return r;
}

torch::Tensor pixels_of(const std::string& png) { return to_rgb_tensor(read_image(png)); }

TEST(GenerateRequest, RecordsEveryFieldAndReadsItBack) {
  const TempDir dir;
  GenerateRequest r = pixels_request(dir);
  r.clip_models.push_back({"second model", -0.5, 7});
  r.image_prompts = {"a.png:0.5"};
  r.init_images = {"b.png", "c.png"};
  r.optimizer.kind = "adamw";
  r.optimizer.lr = 0.25;
  r.prompt_blend = true;
  r.eta = 0.5;
  r.frames = "frames";
  r.pinned_models = {{"clip", "x", "00"}};  // not part of the recorded job
  r.command_line = {"-p", "x"};
  const GenerateRequest back = GenerateRequest::from_json(r.to_json(), "test");
  EXPECT_EQ(back.to_json(), r.to_json());
  EXPECT_EQ(back.clip_models.size(), 2u);
  EXPECT_EQ(back.clip_models[1].cutn, 7);
  EXPECT_EQ(back.optimizer.kind, "adamw");
  EXPECT_TRUE(back.pinned_models.empty());
  EXPECT_TRUE(back.command_line.empty());
  // Fields a record leaves out take their defaults; a field we do not know is refused, as is a wrong type.
  EXPECT_EQ(GenerateRequest::from_json("{}", "test").to_json(), GenerateRequest().to_json());
  EXPECT_THROW(GenerateRequest::from_json(R"({"cutz": 3})", "test"), Error);
  EXPECT_THROW(GenerateRequest::from_json(R"({"cutn": "many"})", "test"), Error);
  EXPECT_THROW(GenerateRequest::from_json("[1]", "test"), Error);
  EXPECT_THROW(GenerateRequest::from_json("{", "test"), Error);
}

TEST(GenerateRequest, ValidateNamesTheFieldOutOfRange) {
  const TempDir dir;
  const GenerateRequest good = pixels_request(dir);
  EXPECT_NO_THROW(good.validate());
  const std::vector<std::pair<std::string, std::function<void(GenerateRequest&)>>> bad = {
      {"cutn", [](GenerateRequest& r) { r.cutn = 0; }},
      {"cutn", [](GenerateRequest& r) { r.clip_models[0].cutn = -3; }},
      {"steps", [](GenerateRequest& r) { r.steps = -1; }},
      {"keep", [](GenerateRequest& r) { r.keep = 2; }},
      {"explore_steps", [](GenerateRequest& r) { r.explore_steps = 99; }},
      {"seed", [](GenerateRequest& r) { r.seed = -1; }},
      {"size", [](GenerateRequest& r) { r.width = 5000; }},
      {"width and height", [](GenerateRequest& r) { r.height = 0; }},
      {"output", [](GenerateRequest& r) { r.output = "out.jpg"; }},
      {"generator", [](GenerateRequest& r) { r.generator = "gan"; }},
      {"augments", [](GenerateRequest& r) { r.augments = "blur"; }},
      {"loss", [](GenerateRequest& r) { r.loss = "l3"; }},
      {"pixel_param", [](GenerateRequest& r) { r.pixel_param = "hsv"; }},
      {"lr", [](GenerateRequest& r) { r.optimizer.lr = 0; }},
      {"cut_pow", [](GenerateRequest& r) { r.cut_pow = std::nan(""); }},
      {"init_weight", [](GenerateRequest& r) { r.init_weight = INFINITY; }},
      {"threads", [](GenerateRequest& r) { r.clip.threads = -2; }},
      {"precision", [](GenerateRequest& r) { r.clip.precision = "fp8"; }},
      {"nothing to aim at", [](GenerateRequest& r) { r.prompt.clear(); }},
      {"skip_timesteps",
       [](GenerateRequest& r) {
         r.generator = "diffusion";
         r.diffusion_checkpoint = "unet.pt";
         r.skip_timesteps = 3;
       }},
  };
  for (const auto& [field, change] : bad) {
    GenerateRequest r = good;
    change(r);
    try {
      r.validate();
      ADD_FAILURE() << "accepted a bad " << field;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(field), std::string::npos) << msg;
      EXPECT_EQ(msg.find("--"), std::string::npos) << "a library error names a command-line flag: " << msg;
    }
  }
}

TEST(Generate, AStoppedRunResumesToTheImageOfARunNeverStopped) {
  const TempDir dir;
  GenerateRequest whole = pixels_request(dir);
  whole.output = (dir / "whole.png").string();
  int64_t total = -1, steps = 0;
  GenerateCallbacks count;
  count.on_start = [&](int64_t t, int64_t done) {
    total = t;
    EXPECT_EQ(done, 0);
  };
  count.on_step = [&](const GenerateStep& s) {
    ++steps;
    EXPECT_EQ(s.step, steps);
    EXPECT_FALSE(s.parts.empty());
  };
  const GenerateResult full = generate(whole, count);
  EXPECT_EQ(total, whole.steps);
  EXPECT_EQ(steps, whole.steps);
  ASSERT_EQ(full.images.size(), 1u);
  EXPECT_EQ(full.images[0].path, whole.output);
  EXPECT_FALSE(full.stopped);

  GenerateRequest stopped = pixels_request(dir);
  int64_t seen = 0;
  GenerateCallbacks stop_after_two;
  stop_after_two.on_step = [&](const GenerateStep&) { ++seen; };
  stop_after_two.should_stop = [&] { return seen == 2; };
  const GenerateResult part = generate(stopped, stop_after_two);
  ASSERT_TRUE(part.stopped);
  EXPECT_EQ(part.steps_done, 2);
  EXPECT_TRUE(part.images.empty());

  const GenerateRecord record = read_generate_record(part.sidecar);
  ASSERT_TRUE(record.request.has_value());
  ASSERT_TRUE(record.resume.has_value());
  EXPECT_EQ(record.request->to_json(), stopped.to_json());
  int64_t resumed_from = -1;
  GenerateCallbacks resumed;
  resumed.on_start = [&](int64_t, int64_t done) { resumed_from = done; };
  const GenerateResult rest = generate(*record.request, resumed, &*record.resume);
  EXPECT_EQ(resumed_from, 2);
  ASSERT_EQ(rest.images.size(), 1u);
  EXPECT_TRUE(torch::equal(pixels_of(rest.images[0].path), pixels_of(whole.output)));
  EXPECT_FALSE(std::filesystem::exists(dir / "out.state.safetensors"));
}

// Diffusion candidates sampled as one batch: one run steps them all, the ranking sees each, and a stopped
// batch resumes to the image of one never stopped, to the pixel level: across two generate() calls the guided
// steps agree to about 1e-7 of the loss, not bit for bit (a DiffusionRun resumed within one call is exact:
// DiffusionRun.GuidanceLowersTheClipLossAndResumesExactly). The bundled toy models, a few respaced steps.
TEST(Generate, DiffusionCandidatesRunAsOneBatchAndResume) {
  const TempDir dir;
  GenerateRequest r;
  r.prompt = "a red circle on a blue background";
  r.seed = 3;
  use_bundled_models(r, {});
  ASSERT_EQ(r.generator, "diffusion");
  r.n = 3;
  r.batch = 3;
  r.timestep_respacing = "ddim6";
  r.skip_timesteps = 2;
  r.output = (dir / "whole.png").string();
  int64_t steps = 0;
  GenerateCallbacks count;
  count.on_step = [&](const GenerateStep&) { ++steps; };
  const GenerateResult whole = generate(r, count);
  ASSERT_EQ(whole.images.size(), 1u);
  EXPECT_EQ(steps, r.n * 4);  // every candidate reports every step
  const GenerateRecord record = read_generate_record((dir / "whole.json").string());
  EXPECT_EQ(record.request->batch, 3);

  r.output = (dir / "parts.png").string();
  int polls = 0;
  GenerateCallbacks stop;
  stop.should_stop = [&] { return ++polls == 3; };
  const GenerateResult part = generate(r, stop);
  ASSERT_TRUE(part.stopped);
  EXPECT_EQ(part.steps_done, 2);
  const GenerateRecord stopped = read_generate_record(part.sidecar);
  const GenerateResult rest = generate(*stopped.request, {}, &*stopped.resume);
  ASSERT_EQ(rest.images.size(), 1u);
  EXPECT_EQ(rest.images[0].candidate, whole.images[0].candidate);
  const torch::Tensor levels =
      (pixels_of(rest.images[0].path).to(torch::kInt) - pixels_of(whole.images[0].path).to(torch::kInt))
          .abs();
  EXPECT_LE(levels.max().item<int>(), 1);

  // One at a time, the same request runs three samplers.
  r.batch = 1;
  r.output = (dir / "single.png").string();
  EXPECT_EQ(generate(r).images.size(), 1u);
  r.generator = "pixels";
  r.batch = 2;
  EXPECT_THROW(r.validate(), Error);
}

}  // namespace
}  // namespace clipguide::test
