// clipguide_similarity: embed images and texts with a CLIP model and print their cosine similarities and
// zero-shot probabilities, the smallest useful program built on the clipguide library.
//
//   clipguide_similarity MODEL --vocab VOCAB --texts-file PROMPTS.txt IMAGE...
#include <clipguide/clip/embed.h>
#include <clipguide/clip/load.h>
#include <clipguide/core/device.h>
#include <clipguide/core/error.h>
#include <clipguide/core/file_io.h>

#include <cstdio>
#include <iostream>
#include <sstream>

int main(int argc, char** argv) {
  namespace cg = clipguide;
  std::string model, vocab, texts_file, device = "cpu";
  std::vector<std::string> images;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw cg::Error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--vocab")
        vocab = next();
      else if (a == "--texts-file")
        texts_file = next();
      else if (a == "--device")
        device = next();
      else if (model.empty())
        model = a;
      else
        images.push_back(a);
    } catch (const std::exception& e) {
      std::cerr << "clipguide_similarity: " << cg::error_line(e) << "\n";
      return 2;
    }
  }
  if (model.empty() || texts_file.empty() || images.empty()) {
    std::cerr
        << "usage: clipguide_similarity MODEL [--vocab VOCAB] [--device D] --texts-file FILE IMAGE...\n";
    return 2;
  }
  try {
    std::vector<std::string> texts;
    std::istringstream in(cg::read_small_file(texts_file, 1u << 20));
    for (std::string line; std::getline(in, line);) texts.push_back(line);
    cg::LoadOptions options;
    options.vocab = vocab;
    options.device = cg::parse_device(device);
    cg::LoadedClip clip = cg::load_clip(model, options);
    cg::EmbedOptions embed;
    embed.normalize = true;
    embed.truncate = true;
    const torch::Tensor img = cg::embed_image_files(clip, images, embed);  // [I, E]
    const torch::Tensor txt = cg::embed_texts(clip, texts, embed);         // [T, E]
    const torch::Tensor cos = torch::matmul(img, txt.t());                 // [I, T]
    const torch::Tensor probs = torch::softmax(clip.model->logit_scale_exp().to(torch::kCPU) * cos, 1);
    std::printf("model: %s (%s, %s)\n\n", clip.path.c_str(), clip.model->config().architecture().c_str(),
                clip.format.c_str());
    for (size_t t = 0; t < texts.size(); ++t) std::printf("  T%zu = \"%s\"\n", t, texts[t].c_str());
    std::printf("\ncosine similarity (zero-shot probability over the texts)\n%-28s", "image");
    for (size_t t = 0; t < texts.size(); ++t) std::printf("  %14s", ("T" + std::to_string(t)).c_str());
    std::printf("\n");
    for (size_t i = 0; i < images.size(); ++i) {
      std::string name = images[i].substr(images[i].find_last_of('/') + 1);
      std::printf("%-28s", name.substr(0, 28).c_str());
      for (size_t t = 0; t < texts.size(); ++t) {
        std::printf("  %+6.3f (%4.1f%%)", cos[i][t].item<float>(), 100 * probs[i][t].item<float>());
      }
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::cerr << "clipguide_similarity: error: " << cg::error_line(e) << "\n";
    return 1;
  }
  return 0;
}
