// A self-contained HTML page of ranked images: embedded thumbnails, scores as bars, the prompts, the model
// and the metric. Every string from the user or the file system is HTML-escaped.
#pragma once

#include <string>
#include <vector>

namespace clipguide {

struct ReportEntry {
  int64_t rank = 0;
  std::string image;  // path, shown and used to make the thumbnail
  double score = 0;
  std::string group;  // prompt of the group (rerank --group-by), or empty
};

struct ReportInfo {
  std::string title = "clipguide rerank";
  std::vector<std::string> prompts, negatives;
  std::string model, metric_definition;
};

std::string html_escape(const std::string& text);

// The whole page; thumbnails are PNG data URIs at most `thumb_side` pixels on their longer side.
std::string render_report(const ReportInfo& info, const std::vector<ReportEntry>& entries,
                          int thumb_side = 192);

}  // namespace clipguide
