// Compiled as C++20 (Arrow's headers need it) and without the library's precompiled libtorch header.
#include "io/parquet.h"

#include "core/error.h"

#ifdef CLIPGUIDE_PARQUET
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>
#include <parquet/exception.h>
#endif

namespace clipguide {

#ifdef CLIPGUIDE_PARQUET

namespace {

void check(const arrow::Status& status, const std::string& path) {
  if (!status.ok()) fail(path, ": ", status.ToString());
}

template <typename T>
T value_or_fail(arrow::Result<T> result, const std::string& path) {
  check(result.status(), path);
  return std::move(result).ValueUnsafe();
}

}  // namespace

bool parquet_available() { return true; }

void write_parquet(const std::string& path, const std::vector<ParquetColumn>& columns) {
  if (columns.empty()) fail("a Parquet table needs at least one column (", path, ")");
  std::vector<std::shared_ptr<arrow::Field>> fields;
  std::vector<std::shared_ptr<arrow::Array>> arrays;
  const auto length = [](const ParquetColumn& c) {
    return std::visit([](const auto& values) { return values.size(); }, c.values);
  };
  for (const ParquetColumn& column : columns) {
    if (length(column) != length(columns[0]))
      fail("Parquet column ", column.name, " has ", length(column), " rows, the first has ",
           length(columns[0]));
    std::shared_ptr<arrow::Array> array;
    std::visit(
        [&](const auto& values) {
          using T = typename std::decay_t<decltype(values)>::value_type;
          using Builder = std::conditional_t<
              std::is_same_v<T, std::string>, arrow::StringBuilder,
              std::conditional_t<std::is_same_v<T, double>, arrow::DoubleBuilder, arrow::Int64Builder>>;
          Builder builder;
          check(builder.AppendValues(values), path);
          check(builder.Finish(&array), path);
        },
        column.values);
    fields.push_back(arrow::field(column.name, array->type()));
    arrays.push_back(std::move(array));
  }
  const auto table = arrow::Table::Make(arrow::schema(fields), arrays);
  const auto out = value_or_fail(arrow::io::FileOutputStream::Open(path), path);
  const int64_t rows = std::max<int64_t>(1, table->num_rows());  // one row group
  check(parquet::arrow::WriteTable(*table, arrow::default_memory_pool(), out, rows), path);
  check(out->Close(), path);
}

std::vector<std::string> read_parquet_strings(const std::string& path, const std::string& column) {
  try {
    const auto in = value_or_fail(arrow::io::ReadableFile::Open(path), path);
    const auto reader = value_or_fail(parquet::arrow::OpenFile(in, arrow::default_memory_pool()), path);
    std::shared_ptr<arrow::Schema> schema;
    check(reader->GetSchema(&schema), path);
    const int index = schema->GetFieldIndex(column);
    if (index < 0) fail(path, " has no column ", column, " (it has: ", schema->ToString(), ")");
    std::shared_ptr<arrow::ChunkedArray> chunks;
    check(reader->ReadColumn(index, &chunks), path);
    std::vector<std::string> out;
    out.reserve(chunks->length());
    for (const auto& chunk : chunks->chunks()) {
      if (chunk->type_id() == arrow::Type::STRING) {
        const auto& strings = static_cast<const arrow::StringArray&>(*chunk);
        for (int64_t i = 0; i < strings.length(); ++i)
          out.emplace_back(strings.IsNull(i) ? "" : strings.GetView(i));
      } else if (chunk->type_id() == arrow::Type::LARGE_STRING) {
        const auto& strings = static_cast<const arrow::LargeStringArray&>(*chunk);
        for (int64_t i = 0; i < strings.length(); ++i)
          out.emplace_back(strings.IsNull(i) ? "" : strings.GetView(i));
      } else {
        fail(path, ": column ", column, " holds ", chunk->type()->ToString(), ", not strings");
      }
    }
    return out;
  } catch (const parquet::ParquetException& e) {
    fail(path, " is not a readable Parquet file: ", std::string(e.what()));
  }
}

#else

bool parquet_available() { return false; }

namespace {
[[noreturn]] void no_parquet() {
  fail(
      "this clipguide was built without Parquet (Apache Arrow's libparquet, from pyarrow in .venv/): run "
      "scripts/venv, then configure and build again");
}
}  // namespace

void write_parquet(const std::string&, const std::vector<ParquetColumn>&) { no_parquet(); }
std::vector<std::string> read_parquet_strings(const std::string&, const std::string&) { no_parquet(); }

#endif

}  // namespace clipguide
