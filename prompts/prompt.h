// Prompts as the VQGAN+CLIP notebooks write them, parsed without their pitfalls:
//   "a castle:1 | fog:-0.5 | ratio 16:9 poster"   items joined by '|'
//   "text:weight:stop"                           only a trailing numeric :w or :w:s is parsed
//   "a:1 | b ^ c | d"                            story mode: segments joined by '^', switched over the run
// '\' escapes the next character ("16\:9" keeps its colon even at the end, "a\|b" keeps its bar).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace clipguide {

struct Prompt {
  std::string text;     // or an image file, for image prompts
  double weight = 1.0;  // negative: push away from it
  // The prompt stops pulling once its (signed) distance is below this; -inf: never stops.
  double stop = -std::numeric_limits<double>::infinity();
};

// One segment: items joined by '|'. Empty items, non-finite weights and a NaN stop are Errors naming the
// item.
std::vector<Prompt> parse_prompts(const std::string& spec);

// An image prompt "FILE", "FILE:weight" or "FILE:weight:stop" (a path may hold colons; only trailing numbers
// count).
Prompt parse_image_prompt(const std::string& spec);

// "NAME", "NAME:a" or "NAME:a:b": the text and up to `max_numbers` trailing numbers (text may hold colons;
// '\' escapes). Shared by prompts, image prompts and --clip-model FILE:weight:cutn.
std::pair<std::string, std::vector<double>> split_trailing_numbers(const std::string& spec,
                                                                   size_t max_numbers);

// Story mode: the segments of `spec` split on '^', each parsed by parse_prompts.
struct PromptSchedule {
  std::vector<std::vector<Prompt>> segments;
  int64_t every = 0;   // steps per segment; 0 with one segment
  bool blend = false;  // linearly blend each segment's embeddings into the next over its steps

  static PromptSchedule parse(const std::string& spec, int64_t every, bool blend);

  // Where step `step` is: segment index and the blend fraction toward the next segment (0 without blending or
  // on the last segment).
  struct Position {
    size_t segment = 0;
    double toward_next = 0.0;
  };
  Position at(int64_t step) const;
};

}  // namespace clipguide
