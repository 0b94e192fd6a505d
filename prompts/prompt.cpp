#include "prompts/prompt.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace clipguide {

namespace {

// Splits on an unescaped separator; escapes are kept for the next stage.
std::vector<std::string> split_unescaped(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      out.back() += s.substr(i, 2);
      ++i;
    } else if (s[i] == sep) {
      out.emplace_back();
    } else {
      out.back() += s[i];
    }
  }
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) ++i;
    out += s[i];
  }
  return out;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// A whole-string number ("1", "-0.5", "2e-1", "-inf"), else false.
bool parse_number(const std::string& raw, double& value) {
  const std::string s = trim(raw);
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  value = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && errno != ERANGE;
}

// "text[:w[:s]]" -> Prompt; `kind` names it in errors ("prompt", "image prompt").
Prompt parse_item(const std::string& item, const char* kind) {
  auto [text, numbers] = split_trailing_numbers(item, 2);
  Prompt p;
  p.text = text;
  if (!numbers.empty()) p.weight = numbers[0];
  if (numbers.size() > 1) p.stop = numbers[1];
  if (p.text.empty()) fail(kind, " '", trim(item), "' has no text before its weight");
  if (!std::isfinite(p.weight)) fail(kind, " '", p.text, "': weight must be a finite number");
  if (std::isnan(p.stop) || p.stop == std::numeric_limits<double>::infinity()) {
    fail(kind, " '", p.text, "': stop must be a number or -inf");
  }
  return p;
}

}  // namespace

std::pair<std::string, std::vector<double>> split_trailing_numbers(const std::string& spec,
                                                                   size_t max_numbers) {
  std::vector<std::string> parts = split_unescaped(spec, ':');
  size_t n = 0;  // how many trailing parts are numbers (at most max_numbers, and never the first part)
  double value = 0;
  while (n < max_numbers && n + 1 < parts.size() && parse_number(parts[parts.size() - 1 - n], value)) ++n;
  std::vector<double> numbers;
  for (size_t i = parts.size() - n; i < parts.size(); ++i) {
    parse_number(parts[i], value);
    numbers.push_back(value);
  }
  std::string text;
  for (size_t i = 0; i + n < parts.size(); ++i) text += (i ? ":" : "") + parts[i];
  return {unescape(trim(text)), numbers};
}

std::vector<Prompt> parse_prompts(const std::string& spec) {
  std::vector<Prompt> out;
  const auto items = split_unescaped(spec, '|');
  for (size_t i = 0; i < items.size(); ++i) {
    if (trim(items[i]).empty()) fail("prompt item ", i + 1, " of '", spec, "' is empty");
    out.push_back(parse_item(items[i], "prompt"));
  }
  return out;
}

Prompt parse_image_prompt(const std::string& spec) { return parse_item(spec, "image prompt"); }

PromptSchedule PromptSchedule::parse(const std::string& spec, int64_t every, bool blend) {
  PromptSchedule s;
  for (const auto& segment : split_unescaped(spec, '^')) s.segments.push_back(parse_prompts(segment));
  if (s.segments.size() > 1 && every <= 0)
    fail("the prompt has ", s.segments.size(), " '^' segments: give a prompt_every of N steps");
  if (every < 0) fail("prompt_every must be positive");
  s.every = s.segments.size() > 1 ? every : 0;
  s.blend = blend && s.segments.size() > 1;
  if (s.blend) {
    for (size_t i = 1; i < s.segments.size(); ++i) {
      if (s.segments[i].size() != s.segments[0].size()) {
        fail(
            "prompt_blend pairs prompts across segments: every '^' segment needs the same number of '|' "
            "items (",
            s.segments[0].size(), " vs ", s.segments[i].size(), ")");
      }
    }
  }
  return s;
}

PromptSchedule::Position PromptSchedule::at(int64_t step) const {
  if (segments.size() <= 1 || every <= 0) return {};
  const auto index = static_cast<size_t>(std::max<int64_t>(step, 0) / every);
  if (index + 1 >= segments.size()) return {segments.size() - 1, 0.0};
  const double frac = blend ? static_cast<double>(step % every) / static_cast<double>(every) : 0.0;
  return {index, frac};
}

}  // namespace clipguide
