#include "jobs/report.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "io/image.h"

namespace clipguide {
namespace {

std::string base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 2]);
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? table[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? table[v & 63] : '=';
  }
  return out;
}

const char* const kStyle = R"(
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 8px; }
.meta { color: #555; margin-bottom: 16px; }
.meta b { color: #222; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
.card img { width: 100%; height: 192px; object-fit: contain; background: #eee; display: block; }
.rank { font-weight: 600; }
.name { color: #555; font-size: 12px; word-break: break-all; }
.bar { height: 8px; background: #e4e4e4; border-radius: 4px; margin: 6px 0 2px; }
.bar span { display: block; height: 100%; background: #3b7dd8; border-radius: 4px; }
.score { font-variant-numeric: tabular-nums; }
.missing { height: 192px; display: flex; align-items: center; justify-content: center; color: #a00; background: #fee; }
)";

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_report(const ReportInfo& info, const std::vector<ReportEntry>& entries, int thumb_side) {
  double lo = 0, hi = 1;
  if (!entries.empty()) {
    auto [mn, mx] = std::minmax_element(entries.begin(), entries.end(),
                                        [](const auto& a, const auto& b) { return a.score < b.score; });
    lo = mn->score;
    hi = mx->score;
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : " · ") + html_escape(x);
    return s;
  };
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" +
                     html_escape(info.title) + "</title><style>" + kStyle + "</style></head><body>\n<h1>" +
                     html_escape(info.title) + "</h1>\n<div class=\"meta\">";
  if (!info.prompts.empty()) html += "<div><b>prompt:</b> " + join(info.prompts) + "</div>";
  if (!info.negatives.empty()) html += "<div><b>negative:</b> " + join(info.negatives) + "</div>";
  html += "<div><b>model:</b> " + html_escape(info.model) + "</div><div><b>score:</b> " +
          html_escape(info.metric_definition) + "</div><div><b>images:</b> " +
          std::to_string(entries.size()) + "</div></div>\n";
  std::string group = "\x01";
  for (const auto& e : entries) {
    if (e.group != group) {
      if (group != "\x01") html += "</div>\n";
      group = e.group;
      if (!group.empty()) html += "<h2>" + html_escape(group) + "</h2>\n";
      html += "<div class=\"grid\">\n";
    }
    std::string thumb;
    try {
      thumb = "<img alt=\"" + html_escape(e.image) + "\" src=\"data:image/png;base64," +
              base64(thumbnail_png(read_image(e.image), thumb_side)) + "\">";
    } catch (const Error& err) {
      thumb = "<div class=\"missing\">" + html_escape(err.what()) + "</div>";
    }
    const double frac = hi > lo ? (e.score - lo) / (hi - lo) : 1.0;
    char score[64], width[32];
    std::snprintf(score, sizeof score, "%.4f", e.score);
    std::snprintf(width, sizeof width, "%.1f%%", 5.0 + 95.0 * frac);
    html += "<div class=\"card\">" + thumb + "<div class=\"rank\">#" + std::to_string(e.rank) +
            "</div><div class=\"bar\"><span style=\"width:" + width +
            "\"></span></div><div class=\"score\">" + score + "</div><div class=\"name\">" +
            html_escape(e.image) + "</div></div>\n";
  }
  if (group != "\x01") html += "</div>\n";
  html += "</body></html>\n";
  return html;
}

}  // namespace clipguide
