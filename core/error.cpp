#include "core/error.h"

#include <c10/util/Exception.h>

namespace clipguide {

std::string error_line(const std::exception& e) {
  std::string text = e.what();
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    text = c10_error->what_without_backtrace();
    text = text.substr(0, text.find('\n'));  // the check that failed, not where
  }
  return quote_untrusted(text, 4096);
}

}  // namespace clipguide
